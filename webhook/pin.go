package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/policy"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
)

// Allocator is the pinning allocator as the webhook uses it; *alloc.Allocator
// in production. nil in Options means defaulting only (--pinning=false).
type Allocator interface {
	// Reserve serves one Service's request, all or nothing.
	Reserve(ctx context.Context, req alloc.Request) (alloc.Result, error)
	// Check says whether the Service of req (its owner and labels) may
	// use ip, persisting nothing.
	Check(ctx context.Context, ip netip.Addr, req alloc.Request) error
	// CheckConfig compiles a pool document and checks it orphans nothing.
	CheckConfig(ctx context.Context, c *alloc.PoolConfig, cidrs []netip.Prefix) (*alloc.Pools, error)
	// Pools are the pools in force (and the ServiceCIDRs they were
	// compiled against).
	Pools() *alloc.Pools
}

var _ Allocator = (*alloc.Allocator)(nil)

// serviceError carries an allocator error about one Service to
// responseForError, with what the apiserver-shaped denial needs: the
// Service's name and the clusterIPs value the field error shows.
type serviceError struct {
	name       string
	clusterIPs []string
	pool       string // the pool annotation's value, for ErrUnknownPool
	err        error
}

func (e *serviceError) Error() string { return e.err.Error() }
func (e *serviceError) Unwrap() error { return e.err }

// ownerOf identifies the Service of a review for the allocator. On CREATE
// a generateName Service has no name yet: the request UID tells its
// pending reservation apart until the reconciler binds it to the real name.
func ownerOf(req *requestIn, svc *corev1.Service) alloc.Owner {
	o := alloc.Owner{Namespace: svc.Namespace, Name: svc.Name, GenerateName: svc.GenerateName, RequestUID: string(req.UID)}
	if o.Namespace == "" {
		o.Namespace = req.Namespace
	}
	if o.Name == "" {
		o.Name = req.Name
	}
	return o
}

// givenIPs parses the addresses a decision says the Service carries,
// skipping "None" (headless) and anything unparsable (the policy engine has
// already rejected malformed addresses the apiserver would reject).
func givenIPs(ips []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// oldClusterIPs reads the stored object's addresses on UPDATE. They are
// never re-checked: the apiserver keeps them whatever our state says, and
// a Service must stay editable even if our records disagree (the
// reconciler imports or repairs those).
func oldClusterIPs(raw []byte) []netip.Addr {
	if isNull(raw) {
		return nil
	}
	var obj struct {
		Spec struct {
			ClusterIP  string   `json:"clusterIP"`
			ClusterIPs []string `json:"clusterIPs"`
		} `json:"spec"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &obj); err != nil {
		return nil
	}
	return givenIPs(append(obj.Spec.ClusterIPs, obj.Spec.ClusterIP))
}

// newIPs are the given addresses that the stored object did not already
// hold: on CREATE all of them, on UPDATE the added secondary (or, on
// re-invocation, the one we pinned).
func newIPs(req *requestIn, d *policy.Decision) []netip.Addr {
	given := givenIPs(d.ClusterIPs)
	if policy.Operation(req.Operation) != policy.Update {
		return given
	}
	old := oldClusterIPs(req.OldObject)
	return slices.DeleteFunc(given, func(a netip.Addr) bool { return slices.Contains(old, a) })
}

// isHeadless: clusterIP None is never pinned.
func isHeadless(d *policy.Decision) bool {
	return slices.Contains(d.ClusterIPs, "None")
}

// pin reserves addresses for the families the apiserver would allocate
// dynamically (d.Allocate) and checks the ones the Service brings. It
// returns the clusterIPs to write (nil: nothing to write) and warnings.
//
// A pool that is exhausted or draining is not a reason to deny: the
// apiserver would accept the Service and allocate dynamically, so the
// family is left to it with a warning (never reject what the apiserver
// accepts). Reserve is all or nothing, so the fallback retries with one
// family fewer from the end: clusterIPs can only name a prefix of the
// families (primary first), so a secondary without a pinned primary is of
// no use.
func (h *Handler) pin(ctx context.Context, req *requestIn, d *policy.Decision, nsLabels map[string]string) ([]string, []string, error) {
	svc := d.Service
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName || isHeadless(d) {
		return nil, nil, nil
	}
	requested := newIPs(req, d)
	families := d.Allocate
	left := h.leftPools(req, svc, nsLabels)
	if len(families) == 0 && len(requested) == 0 {
		return nil, left, nil
	}
	if err := h.apiserverReady(); err != nil {
		return nil, nil, err
	}
	r := alloc.Request{
		Owner:           ownerOf(req, svc),
		Annotations:     svc.Annotations,
		NamespaceLabels: nsLabels,
		Labels:          svc.Labels,
		Requested:       requested,
		DryRun:          req.dryRun(),
	}
	warnings := left
	var res alloc.Result
	var full error // the first exhausted/draining answer, the most telling
	n := len(families)
	for ; ; n-- {
		r.Families = families[:n]
		var err error
		res, err = h.alloc.Reserve(ctx, r)
		if err == nil {
			break
		}
		if n > 0 && (errors.Is(err, alloc.ErrFull) || errors.Is(err, alloc.ErrDraining)) {
			if full == nil {
				full = err
			}
			continue
		}
		if ctx.Err() != nil {
			return nil, nil, outOfTime(ctx, err)
		}
		return nil, nil, &serviceError{name: svc.Name, clusterIPs: d.ClusterIPs, pool: svc.Annotations[alloc.PoolAnnotation], err: err}
	}
	if full != nil {
		warnings = append(warnings, fmt.Sprintf("%s: %s left to the apiserver's dynamic allocation", oneLine(full.Error()), familyList(families[n:])))
	}
	ips := slices.Clone(d.ClusterIPs)
	added := false
	for _, a := range res.IPs {
		if !a.IsValid() {
			break // a gap: the apiserver allocates this family and the rest
		}
		ips = append(ips, a.String())
		added = true
	}
	if !added {
		return nil, warnings, nil
	}
	return ips, warnings, nil
}

// leftPools warns, on UPDATE, when the Service's new labels take it out of
// the serviceSelector of a pool whose address it holds. The update is
// allowed and the address kept (access rules never evict: refusing a label
// edit would block unrelated changes, and the Namespace's labels can change
// behind admission's back anyway); the warning says what it costs: new
// addresses of that pool are refused from now on. Only pools with a
// serviceSelector are concerned, so other updates pay nothing.
func (h *Handler) leftPools(req *requestIn, svc *corev1.Service, nsLabels map[string]string) []string {
	pools := h.alloc.Pools()
	if policy.Operation(req.Operation) != policy.Update || !pools.HasServiceSelector() || isNull(req.OldObject) {
		return nil
	}
	var old struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.OldObject, &old); err != nil {
		return nil
	}
	o := ownerOf(req, svc)
	before := alloc.Subject{Namespace: o.Namespace, Name: o.Name, NamespaceLabels: nsLabels, Labels: old.Metadata.Labels}
	after := before
	after.Labels = svc.Labels
	var out []string
	seen := map[netip.Addr]bool{}
	for _, ip := range oldClusterIPs(req.OldObject) {
		p := pools.PoolOf(ip)
		if seen[ip] || p == nil || !p.Serves(before) || p.Serves(after) {
			continue
		}
		seen[ip] = true
		out = append(out, fmt.Sprintf("%s keeps %s, but its new labels leave pool %q, which serves only %s: it can get no new address from that pool",
			after, ip, p.Name, p.Audience()))
	}
	return out
}

// checkPins is /validate's view of the final Service: every address it
// gained must be usable by it (not held by another Service, inside a
// ServiceCIDR, in a pool that serves it). The webhook's own pins pass,
// since they are reserved to this Service. A later mutating webhook that
// adds an address of a restricted pool is caught here.
func (h *Handler) checkPins(ctx context.Context, req *requestIn, d *policy.Decision, nsLabels map[string]string) error {
	svc := d.Service
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName || isHeadless(d) {
		return nil
	}
	r := alloc.Request{Owner: ownerOf(req, svc), NamespaceLabels: nsLabels, Labels: svc.Labels}
	ips := newIPs(req, d)
	if len(ips) == 0 {
		return nil
	}
	if err := h.apiserverReady(); err != nil {
		return err
	}
	for _, ip := range ips {
		if err := h.alloc.Check(ctx, ip, r); err != nil {
			if ctx.Err() != nil {
				return outOfTime(ctx, err)
			}
			return &serviceError{name: svc.Name, clusterIPs: d.ClusterIPs, err: err}
		}
	}
	return nil
}

// skipLabelled: the Service opts out of the webhook with its own skip
// label (a Namespace's is handled before the policy runs; default/kubernetes
// never gets here with a label check).
func skipLabelled(svc *corev1.Service) bool {
	if svc == nil || (svc.Namespace == "default" && svc.Name == "kubernetes") {
		return false
	}
	v, ok := svc.Labels[policy.SkipLabel]
	return ok && v != "false"
}

// checkSkipped is /validate's check of a Service carrying the skip label:
// no defaulting, no pinning, nothing reserved, but every address it asks
// for that it did not hold must be one it may take, as for any Service:
// not inside a restricted pool that does not serve it, not pending, bound
// or sticky for another Service, not held by a live one. The label is the
// Service author's to set, so without this it would be a way into another
// team's pool or another Service's sticky address. A Service that asks
// for no address costs nothing more than a label lookup.
func (h *Handler) checkSkipped(ctx context.Context, req *requestIn, svc *corev1.Service, nsLabels map[string]string) error {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	asked := svc.Spec.ClusterIPs
	if len(asked) == 0 && svc.Spec.ClusterIP != "" {
		asked = []string{svc.Spec.ClusterIP}
	}
	ips := givenIPs(asked) // "None" and anything unparsable are the apiserver's to refuse
	if policy.Operation(req.Operation) == policy.Update {
		old := oldClusterIPs(req.OldObject)
		ips = slices.DeleteFunc(ips, func(a netip.Addr) bool { return slices.Contains(old, a) })
	}
	if len(ips) == 0 {
		return nil
	}
	if err := h.apiserverReady(); err != nil {
		return err
	}
	r := alloc.Request{Owner: ownerOf(req, svc), NamespaceLabels: nsLabels, Labels: svc.Labels}
	for _, ip := range ips {
		if err := h.alloc.Check(ctx, ip, r); err != nil {
			if ctx.Err() != nil {
				return outOfTime(ctx, err)
			}
			return &serviceError{name: svc.Name, clusterIPs: asked, err: err}
		}
	}
	return nil
}

// apiserverReady refuses, as errUnavailable (500), a review that needs the
// allocator while the apiserver is unreachable (Options.APIServer).
func (h *Handler) apiserverReady() error {
	if h.apiserver == nil {
		return nil
	}
	if err := h.apiserver(); err != nil {
		return &errUnavailable{fmt.Errorf("%w; not pinning or checking addresses from caches that may be stale", err)}
	}
	return nil
}

// poolsError is an invalid pools ConfigMap, denied like the apiserver
// denies an invalid object.
type poolsError struct {
	name string
	err  error
}

func (e *poolsError) Error() string { return e.err.Error() }
func (e *poolsError) Unwrap() error { return e.err }

// reviewPools validates a CREATE/UPDATE of the pools ConfigMap: the
// document must parse, compile against the cluster's ServiceCIDRs (no
// overlap, nothing outside them) and leave no address in use without its
// pool. Other ConfigMaps are allowed untouched (a broad registration must
// not block them).
func (h *Handler) reviewPools(ctx context.Context, req *requestIn) (skipReason string, err error) {
	if h.alloc == nil || h.poolsConfigMap == "" {
		return "pool validation is off", nil
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(req.Object, &cm); err != nil {
		return "", &requestError{"request.object is not a ConfigMap: " + oneLine(err.Error())}
	}
	ns, name := cm.Namespace, cm.Name
	if ns == "" {
		ns = req.Namespace
	}
	if name == "" {
		name = req.Name
	}
	if ns != h.namespace || name != h.poolsConfigMap {
		return "not the pools ConfigMap", nil
	}
	c, err := alloc.ConfigFromConfigMap(&cm)
	if err != nil {
		return "", &poolsError{name: name, err: err}
	}
	if _, err := h.alloc.CheckConfig(ctx, c, h.alloc.Pools().CIDRs); err != nil {
		var ce *alloc.ConfigError
		if errors.As(err, &ce) {
			return "", &poolsError{name: name, err: err}
		}
		return "", err // reading the reservations failed: transient
	}
	return "", nil
}

func familyList(fs []corev1.IPFamily) string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return strings.Join(out, " and ")
}
