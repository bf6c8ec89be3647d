package ops

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// Scenario names are a contract (issue 7): scripts call `plan <scenario>`.
type Scenario string

// The four reconfiguration scenarios of the Kubernetes task "Reconfigure the
// default Service CIDR".
const (
	Extend         Scenario = "extend"
	SingleToDual   Scenario = "single-to-dual"
	DualToSingle   Scenario = "dual-to-single"
	ReplacePrimary Scenario = "replace-primary"
)

// Scenarios lists every scenario with a one-line summary, in the order
// `plan --help` prints them.
var Scenarios = []struct {
	Name    Scenario
	Summary string
}{
	{Extend, "add a ServiceCIDR (--cidr) of a family the cluster serves and a pool over it"},
	{SingleToDual, "add the secondary family's ServiceCIDR (--cidr) and pool, then upgrade chosen Services to PreferDualStack"},
	{DualToSingle, "downgrade Services using --family to SingleStack on the remaining family (primary-family ones: re-create by hand), then drop the family from the pools and its ServiceCIDRs once unused"},
	{ReplacePrimary, "add a new ServiceCIDR (--cidr), drain the old pool, delete the old ServiceCIDR (--old-cidr), re-create Services at the same offset"},
}

// ParseScenario checks a scenario name.
func ParseScenario(s string) (Scenario, error) {
	for _, x := range Scenarios {
		if string(x.Name) == s {
			return x.Name, nil
		}
	}
	names := make([]string, len(Scenarios))
	for i, x := range Scenarios {
		names[i] = string(x.Name)
	}
	return "", fmt.Errorf("unknown scenario %q (want one of: %s)", s, strings.Join(names, ", "))
}

// Pool ranges a new pool can cover (--pool-range).
const (
	// PoolRangeBand is the KEP-3070 static band of the CIDR (default): the
	// addresses the apiserver's dynamic allocation takes last, so pins
	// rarely collide with it.
	PoolRangeBand = "band"
	// PoolRangeWhole is every allocatable address of the CIDR (network
	// address and IPv4 broadcast left out): only sensible when every
	// Service goes through the pinning webhook.
	PoolRangeWhole = "whole"
)

// Options are the scenario flags.
type Options struct {
	// CIDR is the new range (--cidr): extend, single-to-dual, replace-primary.
	CIDR netip.Prefix
	// CIDRName names the new ServiceCIDR object (--cidr-name); empty
	// derives one from the scenario and CIDR.
	CIDRName string
	// PoolName is the pool that gets the new addresses (--pool-name).
	PoolName string
	// PoolRange is PoolRangeBand (default) or PoolRangeWhole.
	PoolRange string
	// NamespaceSelector and Selector choose Services (nil: not given).
	NamespaceSelector labels.Selector
	Selector          labels.Selector
	// Family is the family being removed (dual-to-single).
	Family corev1.IPFamily
	// OldCIDR is the range being replaced (replace-primary); invalid means
	// the default ServiceCIDR's primary range.
	OldCIDR netip.Prefix
}

// Plan is what plan prints and apply executes: object steps in order, then
// the per-Service changes (one Service at a time).
type Plan struct {
	Scenario Scenario `json:"scenario"`
	// OldCIDR is the range replace-primary moves Services out of.
	OldCIDR  string          `json:"oldCIDR,omitempty"`
	Steps    []Step          `json:"steps"`
	Services []ServiceChange `json:"services"`
	// Notes are warnings and the manual steps outside this tool's reach
	// (kube-apiserver flags, network plugins, DNS).
	Notes []string `json:"notes,omitempty"`
}

// Action is what a Step does.
type Action string

// Step actions, executed in plan order.
const (
	ActCreateServiceCIDR Action = "create-servicecidr"
	ActWaitReady         Action = "wait-servicecidr-ready"
	ActEditPools         Action = "edit-pools"
	ActCheckFamily       Action = "check-apiserver-family"
	ActDeleteServiceCIDR Action = "delete-servicecidr"
	ActServices          Action = "change-services"
	ActPrunePools        Action = "prune-pools"
)

// Step is one object-level action.
type Step struct {
	Action      Action           `json:"action"`
	Description string           `json:"description"`
	ServiceCIDR *ServiceCIDRSpec `json:"serviceCIDR,omitempty"`
	Pools       *PoolEdit        `json:"pools,omitempty"`
	// Family is the family ActCheckFamily expects the apiserver to serve.
	Family corev1.IPFamily `json:"family,omitempty"`
	// Unused are ranges in which no Service may hold an address when the
	// step runs: apply leaves the step to a later run otherwise
	// (dual-to-single removes a family only once nothing uses it).
	Unused []string `json:"unused,omitempty"`
}

// ServiceCIDRSpec names a ServiceCIDR and its ranges.
type ServiceCIDRSpec struct {
	Name  string   `json:"name"`
	CIDRs []string `json:"cidrs"`
}

// ChangeKind is what happens to one Service.
type ChangeKind string

// Service changes.
const (
	// Upgrade patches ipFamilyPolicy to PreferDualStack.
	Upgrade ChangeKind = "upgrade"
	// Downgrade patches the Service to SingleStack on its primary family.
	Downgrade ChangeKind = "downgrade"
	// Recreate deletes the Service and creates it again with new addresses.
	Recreate ChangeKind = "recreate"
	// RecreateManually is reported, never done: the Service's primary
	// family is going away and its primary address is immutable.
	RecreateManually ChangeKind = "recreate-manually"
)

// ServiceChange is the change of one Service.
type ServiceChange struct {
	Namespace  string     `json:"namespace"`
	Name       string     `json:"name"`
	Change     ChangeKind `json:"change"`
	ClusterIPs []string   `json:"clusterIPs,omitempty"`
	// NewClusterIPs are the addresses after the change ("" entries: left to
	// the apiserver, or the webhook's pool, to choose).
	NewClusterIPs  []string `json:"newClusterIPs,omitempty"`
	IPFamilyPolicy string   `json:"ipFamilyPolicy,omitempty"`
	IPFamilies     []string `json:"ipFamilies,omitempty"`
	// OffsetKept is false when replace-primary could not keep an address's
	// offset from the range start; Note says why.
	OffsetKept *bool  `json:"offsetKept,omitempty"`
	Note       string `json:"note,omitempty"`
	// Resume marks a Service an interrupted apply already deleted: it is
	// re-created from the journal.
	Resume bool `json:"resume,omitempty"`
}

// Key is namespace/name.
func (c ServiceChange) Key() string { return c.Namespace + "/" + c.Name }

// BuildPlan is the pure planner: it validates opts against the snapshot
// (overlaps with ServiceCIDRs, the new pool document through alloc.Compile
// and alloc.ValidateChange) and lists the steps and Service changes. Steps
// already done in the snapshot are left out, so planning again after a
// partial apply shows only what remains.
func BuildPlan(s *Snapshot, sc Scenario, o Options) (*Plan, error) {
	if s == nil || len(s.Prefixes()) == 0 {
		return nil, errors.New("the cluster has no ServiceCIDR (networking.k8s.io/v1, Kubernetes >= 1.33)")
	}
	if o.PoolRange == "" {
		o.PoolRange = PoolRangeBand
	}
	if o.PoolRange != PoolRangeBand && o.PoolRange != PoolRangeWhole {
		return nil, fmt.Errorf("--pool-range %q: want %s or %s", o.PoolRange, PoolRangeBand, PoolRangeWhole)
	}
	if o.CIDR.IsValid() && o.CIDR.Masked() != o.CIDR {
		return nil, fmt.Errorf("--cidr %s has host bits set (did you mean %s?)", o.CIDR, o.CIDR.Masked())
	}
	var (
		p   *Plan
		err error
	)
	switch sc {
	case Extend:
		p, err = planExtend(s, o)
	case SingleToDual:
		p, err = planSingleToDual(s, o)
	case DualToSingle:
		p, err = planDualToSingle(s, o)
	case ReplacePrimary:
		p, err = planReplacePrimary(s, o)
	default:
		_, err = ParseScenario(string(sc))
	}
	if err != nil {
		return nil, err
	}
	// Empty lists, not null, for scripts reading -o json.
	if p.Steps == nil {
		p.Steps = []Step{}
	}
	if p.Services == nil {
		p.Services = []ServiceChange{}
	}
	return p, nil
}

// cidrName derives a ServiceCIDR (and pool) name: DNS-1123, from the range.
func cidrName(prefix string, p netip.Prefix) string {
	r := strings.NewReplacer(".", "-", ":", "-", "/", "-")
	n := prefix + "-" + r.Replace(p.String())
	for strings.Contains(n, "--") {
		n = strings.ReplaceAll(n, "--", "-")
	}
	return strings.Trim(n, "-")
}

// newServiceCIDR is the create step for spec, or nothing when an object of
// that name already has exactly those ranges (a re-run). Another object of
// that name, or a range overlapping an existing ServiceCIDR (other than the
// shared ones listed in allowShared), is an error.
func newServiceCIDR(s *Snapshot, spec ServiceCIDRSpec, allowShared []netip.Prefix) ([]Step, error) {
	if cur, ok := s.ServiceCIDR(spec.Name); ok {
		if slices.Equal(cur.Spec.CIDRs, spec.CIDRs) {
			return nil, nil
		}
		return nil, fmt.Errorf("ServiceCIDR %q already exists with %v, not %v: choose another --cidr-name", spec.Name, cur.Spec.CIDRs, spec.CIDRs)
	}
	for _, c := range spec.CIDRs {
		p := netip.MustParsePrefix(c)
		if slices.Contains(allowShared, p) {
			continue
		}
		for _, obj := range s.ServiceCIDRs {
			for _, oc := range obj.Spec.CIDRs {
				q, err := netip.ParsePrefix(oc)
				if err == nil && q.Overlaps(p) {
					return nil, fmt.Errorf("%s overlaps %s of ServiceCIDR %q", p, q, obj.Name)
				}
			}
		}
	}
	return []Step{
		{Action: ActCreateServiceCIDR, Description: fmt.Sprintf("create ServiceCIDR %s (%s)", spec.Name, strings.Join(spec.CIDRs, ",")), ServiceCIDR: &spec},
		{Action: ActWaitReady, Description: fmt.Sprintf("wait until ServiceCIDR %s is Ready (kube-controller-manager's service-cidr controller sets it)", spec.Name), ServiceCIDR: &ServiceCIDRSpec{Name: spec.Name}},
	}, nil
}

// poolAddresses is what --pool-range means for p.
func poolAddresses(p netip.Prefix, mode string) (string, error) {
	if mode == PoolRangeWhole {
		r := alloc.RangeFromPrefix(p)
		from, to := r.From.Next(), r.To
		if p.Addr().Is4() {
			to = to.Prev()
		}
		if !from.IsValid() || !to.IsValid() || to.Less(from) {
			return "", fmt.Errorf("%s has no allocatable address", p)
		}
		return alloc.Range{From: from, To: to}.String(), nil
	}
	r, ok := alloc.StaticBand(p)
	if !ok {
		return "", fmt.Errorf("%s has no static band (16 addresses or fewer): use --pool-range %s", p, PoolRangeWhole)
	}
	return r.String(), nil
}

// materialize returns the implicit static-band pool as an explicit spec,
// or nil when the document already defines pools (or the band is empty).
// Adding a first explicit pool would otherwise silently drop the implicit
// one and orphan its reservations.
func materialize(s *Snapshot) (*alloc.PoolSpec, error) {
	if s.Config != nil && len(s.Config.Pools) > 0 {
		return nil, nil
	}
	pools, err := s.Pools()
	if err != nil {
		return nil, err
	}
	band, ok := pools.Get(alloc.StaticBandPool)
	if !ok {
		return nil, nil
	}
	spec := &alloc.PoolSpec{Name: alloc.StaticBandPool}
	for _, r := range band.Addresses.Ranges(corev1.IPv4Protocol) {
		spec.Addresses.IPv4 = append(spec.Addresses.IPv4, r.String())
	}
	for _, r := range band.Addresses.Ranges(corev1.IPv6Protocol) {
		spec.Addresses.IPv6 = append(spec.Addresses.IPv6, r.String())
	}
	if len(spec.Addresses.IPv4)+len(spec.Addresses.IPv6) == 0 {
		return nil, nil
	}
	return spec, nil
}

// poolStep validates edit against the snapshot plus the new prefixes and
// returns the step, or nothing when the document would not change.
func poolStep(s *Snapshot, edit *PoolEdit, newPrefixes []netip.Prefix, desc string) ([]Step, error) {
	next, changed, err := edit.ApplyTo(s.Config)
	if err != nil {
		return nil, err
	}
	if !changed {
		return nil, nil
	}
	prefixes := appendNew(s.Prefixes(), newPrefixes...)
	compiled, err := alloc.Compile(next, prefixes)
	if err != nil {
		return nil, fmt.Errorf("the new pool document would be invalid: %w", err)
	}
	if err := alloc.ValidateChange(compiled, s.Reservations); err != nil {
		return nil, fmt.Errorf("the new pool document would orphan reservations: %w", err)
	}
	return []Step{{Action: ActEditPools, Description: desc, Pools: edit}}, nil
}

func familyOfPrefix(p netip.Prefix) corev1.IPFamily { return alloc.FamilyOf(p.Addr()) }

func addTo(fa *alloc.FamilyAddresses, f corev1.IPFamily, entry string) {
	if f == corev1.IPv4Protocol {
		fa.IPv4 = append(fa.IPv4, entry)
	} else {
		fa.IPv6 = append(fa.IPv6, entry)
	}
}

func planExtend(s *Snapshot, o Options) (*Plan, error) {
	if !o.CIDR.IsValid() {
		return nil, errors.New("extend needs --cidr (the new range)")
	}
	f := familyOfPrefix(o.CIDR)
	if !slices.Contains(s.Families(), f) {
		return nil, fmt.Errorf("--cidr %s is %s, a family this cluster does not serve (%v): that is single-to-dual", o.CIDR, f, s.Families())
	}
	p := &Plan{Scenario: Extend}
	name := o.CIDRName
	if name == "" {
		name = cidrName("extend", o.CIDR)
	}
	steps, err := newServiceCIDR(s, ServiceCIDRSpec{Name: name, CIDRs: []string{o.CIDR.String()}}, nil)
	if err != nil {
		return nil, err
	}
	p.Steps = append(p.Steps, steps...)
	addrs, err := poolAddresses(o.CIDR, o.PoolRange)
	if err != nil {
		return nil, err
	}
	edit := &PoolEdit{Pool: o.PoolName}
	if edit.Pool == "" {
		edit.Pool = name
	}
	if edit.Materialize, err = materialize(s); err != nil {
		return nil, err
	}
	if edit.Materialize != nil {
		edit.DefaultPool = alloc.StaticBandPool
	}
	addTo(&edit.Add, f, addrs)
	steps, err = poolStep(s, edit, []netip.Prefix{o.CIDR}, fmt.Sprintf("add %s to pool %s", addrs, edit.Pool))
	if err != nil {
		return nil, err
	}
	p.Steps = append(p.Steps, steps...)
	if _, exists := poolSpec(s.Config, edit.Pool); !exists && (s.Config == nil || s.Config.DefaultPool != edit.Pool) {
		p.Notes = append(p.Notes, fmt.Sprintf("pool %s is new: Services use it when selected (annotation %s=%s, the pool's namespaces or namespaceSelector, or defaultPool)", edit.Pool, alloc.PoolAnnotation, edit.Pool))
	}
	return p, nil
}

// appendNew appends the prefixes not already in l.
func appendNew(l []netip.Prefix, ps ...netip.Prefix) []netip.Prefix {
	out := slices.Clone(l)
	for _, p := range ps {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// cfgAfter is the document once edit is applied (the current one if the edit
// cannot apply).
func cfgAfter(s *Snapshot, edit *PoolEdit) *alloc.PoolConfig {
	next, _, err := edit.ApplyTo(s.Config)
	if err != nil {
		return s.Config
	}
	return next
}

func poolSpec(c *alloc.PoolConfig, name string) (*alloc.PoolSpec, bool) {
	if c == nil {
		return nil, false
	}
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i], true
		}
	}
	return nil, false
}

// chosen reports whether svc is selected by the namespace/label selectors.
func chosen(s *Snapshot, svc *corev1.Service, o Options) bool {
	if o.Selector != nil && !o.Selector.Matches(labels.Set(svc.Labels)) {
		return false
	}
	if o.NamespaceSelector != nil && !o.NamespaceSelector.Matches(labels.Set(s.NamespaceLabels[svc.Namespace])) {
		return false
	}
	return true
}

// isAPIServerService: default/kubernetes is the apiserver's own; the upstream
// procedure leaves it to the apiserver.
func isAPIServerService(svc *corev1.Service) bool {
	return svc.Namespace == "default" && svc.Name == "kubernetes"
}

func familiesOf(svc *corev1.Service) []string {
	out := make([]string, len(svc.Spec.IPFamilies))
	for i, f := range svc.Spec.IPFamilies {
		out[i] = string(f)
	}
	return out
}

func planSingleToDual(s *Snapshot, o Options) (*Plan, error) {
	if !o.CIDR.IsValid() {
		return nil, errors.New("single-to-dual needs --cidr (the secondary family's range)")
	}
	f := familyOfPrefix(o.CIDR)
	fams := s.Families()
	if fams[0] == f {
		return nil, fmt.Errorf("--cidr %s is %s, the cluster's primary family: single-to-dual adds the other family", o.CIDR, f)
	}
	p := &Plan{Scenario: SingleToDual}
	if !slices.Contains(s.Prefixes(), o.CIDR) {
		name := o.CIDRName
		if name == "" {
			name = cidrName("secondary", o.CIDR)
		}
		steps, err := newServiceCIDR(s, ServiceCIDRSpec{Name: name, CIDRs: []string{o.CIDR.String()}}, nil)
		if err != nil {
			return nil, err
		}
		p.Steps = append(p.Steps, steps...)
	}
	addrs, err := poolAddresses(o.CIDR, o.PoolRange)
	if err != nil {
		return nil, err
	}
	// The secondary addresses go into the pool Services already get (the
	// default pool, or the implicit static band): the webhook pins a
	// Service's secondary from the pool selected for it, so a separate pool
	// would only serve Services that name it.
	edit := &PoolEdit{Pool: o.PoolName}
	if edit.Materialize, err = materialize(s); err != nil {
		return nil, err
	}
	switch {
	case edit.Pool != "":
	case edit.Materialize != nil:
		edit.Pool, edit.DefaultPool = alloc.StaticBandPool, alloc.StaticBandPool
	case s.Config != nil && s.Config.DefaultPool != "":
		edit.Pool = s.Config.DefaultPool
	default:
		edit.Pool = cidrName("secondary", o.CIDR)
	}
	if ps, ok := poolSpec(s.Config, edit.Pool); ok && len(familyEntries(ps.Addresses, f)) > 0 && !slices.Contains(familyEntries(ps.Addresses, f), addrs) {
		p.Notes = append(p.Notes, fmt.Sprintf("pool %s already has %s addresses %v; %s is added beside them", edit.Pool, f, familyEntries(ps.Addresses, f), addrs))
	}
	addTo(&edit.Add, f, addrs)
	steps, err := poolStep(s, edit, []netip.Prefix{o.CIDR}, fmt.Sprintf("add %s addresses %s to pool %s", f, addrs, edit.Pool))
	if err != nil {
		return nil, err
	}
	p.Steps = append(p.Steps, steps...)
	if len(fams) < 2 {
		p.Notes = append(p.Notes, fmt.Sprintf("kube-apiserver serves only %s: add %s to --service-cluster-ip-range (and configure kube-proxy, the network plugin and DNS) before Services can get %s addresses; apply checks this before touching Services", fams[0], o.CIDR, f))
	}
	for i := range s.Services {
		svc := &s.Services[i]
		if svc.Spec.Type == corev1.ServiceTypeExternalName || isAPIServerService(svc) || !chosen(s, svc, o) {
			continue
		}
		if len(svc.Spec.IPFamilies) != 1 || svc.Spec.IPFamilies[0] == f {
			continue // already dual-stack, or single-stack on the new family
		}
		if svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
			continue // PreferDualStack already: the apiserver upgrades it on its next write
		}
		p.Services = append(p.Services, ServiceChange{
			Namespace: svc.Namespace, Name: svc.Name, Change: Upgrade,
			ClusterIPs:     svc.Spec.ClusterIPs,
			IPFamilyPolicy: string(corev1.IPFamilyPolicyPreferDualStack),
			IPFamilies:     []string{string(svc.Spec.IPFamilies[0]), string(f)},
		})
	}
	if o.Selector == nil && o.NamespaceSelector == nil {
		p.Services = nil
		p.Notes = append(p.Notes, "no Services chosen: pass --selector and/or --namespace-selector (--selector '' chooses every Service)")
	}
	if len(p.Services) > 0 {
		p.Steps = append(p.Steps,
			Step{Action: ActCheckFamily, Family: f, Description: fmt.Sprintf("check that kube-apiserver gives a PreferDualStack Service an %s address (server-side dry run)", f)},
			Step{Action: ActServices, Description: fmt.Sprintf("patch %d Service(s) to ipFamilyPolicy: PreferDualStack, one at a time (the webhook pins their %s address)", len(p.Services), f)})
	}
	return p, nil
}

func familyEntries(fa alloc.FamilyAddresses, f corev1.IPFamily) []string {
	if f == corev1.IPv4Protocol {
		return fa.IPv4
	}
	return fa.IPv6
}

func parseFamily(f corev1.IPFamily) (corev1.IPFamily, error) {
	switch strings.ToLower(string(f)) {
	case "ipv4", "4":
		return corev1.IPv4Protocol, nil
	case "ipv6", "6":
		return corev1.IPv6Protocol, nil
	}
	return "", fmt.Errorf("--family %q: want IPv4 or IPv6", f)
}

func otherFamily(f corev1.IPFamily) corev1.IPFamily {
	if f == corev1.IPv4Protocol {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

func planDualToSingle(s *Snapshot, o Options) (*Plan, error) {
	if o.Family == "" {
		return nil, errors.New("dual-to-single needs --family (the family being removed: IPv4 or IPv6)")
	}
	f, err := parseFamily(o.Family)
	if err != nil {
		return nil, err
	}
	remaining := otherFamily(f)
	p := &Plan{Scenario: DualToSingle}
	fams := s.Families()
	if fams[0] == f {
		p.Notes = append(p.Notes, fmt.Sprintf("%s is the cluster's PRIMARY family: removing it changes the primary (default/kubernetes, every single-stack Service): that is beyond dual-to-single", f))
	}
	for i := range s.Services {
		svc := &s.Services[i]
		if svc.Spec.Type == corev1.ServiceTypeExternalName || !slices.Contains(svc.Spec.IPFamilies, f) || !chosen(s, svc, o) {
			continue
		}
		c := ServiceChange{Namespace: svc.Namespace, Name: svc.Name, ClusterIPs: svc.Spec.ClusterIPs, IPFamilies: familiesOf(svc)}
		switch {
		case svc.Spec.IPFamilies[0] == f:
			c.Change = RecreateManually
			c.IPFamilies = nil
			c.Note = fmt.Sprintf("primary family is %s and a Service's primary address is immutable: delete and re-create it as %s (not touched)", f, remaining)
			if isAPIServerService(svc) {
				c.Note = "the apiserver's own Service: it re-creates it from --service-cluster-ip-range (not touched)"
			}
		default:
			c.Change = Downgrade
			c.IPFamilyPolicy = string(corev1.IPFamilyPolicySingleStack)
			c.IPFamilies = []string{string(remaining)}
			if len(svc.Spec.ClusterIPs) > 0 {
				c.NewClusterIPs = []string{svc.Spec.ClusterIPs[0]}
			}
		}
		p.Services = append(p.Services, c)
	}
	n := 0
	for _, c := range p.Services {
		if c.Change == Downgrade {
			n++
		}
	}
	if n > 0 {
		p.Steps = append(p.Steps, Step{Action: ActServices, Description: fmt.Sprintf("downgrade %d Service(s) to SingleStack %s, one at a time (ipFamilyPolicy, ipFamilies and clusterIPs in one patch)", n, remaining)})
	}
	if fams[0] != f {
		steps, notes, err := removeFamily(s, f)
		if err != nil {
			return nil, err
		}
		p.Steps = append(p.Steps, steps...)
		p.Notes = append(p.Notes, notes...)
	}
	p.Notes = append(p.Notes,
		fmt.Sprintf("by hand: remove the %s range from kube-apiserver's --service-cluster-ip-range (and kube-proxy, the network plugin, DNS)", f),
		"PreferDualStack Services created before the apiserver is reconfigured still get an "+string(f)+" address: run apply again afterwards")
	return p, nil
}

// removeFamily lists the steps that take family f out of the pools and the
// ServiceCIDRs, each gated on no Service holding an address in the ranges it
// removes. The apiserver allows deleting a ServiceCIDR but never changing its
// ranges, so one that also lists the remaining family is shrunk by creating
// a replacement with only the remaining ranges first (the remaining
// family's addresses stay covered, and the old object's finalizer can go),
// then deleting it. The default ServiceCIDR is kube-apiserver's own (made
// from --service-cluster-ip-range): it is left to the operator.
func removeFamily(s *Snapshot, f corev1.IPFamily) ([]Step, []string, error) {
	var (
		steps, cidrSteps []Step
		notes            []string
		all              []string
	)
	for _, obj := range s.ServiceCIDRs {
		if obj.DeletionTimestamp != nil {
			continue // already being deleted: the controller finishes it
		}
		var gone, keep []string
		var keepP []netip.Prefix
		for _, c := range obj.Spec.CIDRs {
			q, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			if familyOfPrefix(q) == f {
				gone = append(gone, c)
			} else {
				keep, keepP = append(keep, c), append(keepP, q)
			}
		}
		if len(gone) == 0 {
			continue
		}
		all = append(all, gone...)
		if obj.Name == DefaultServiceCIDR {
			notes = append(notes, fmt.Sprintf("ServiceCIDR %s keeps %s: kube-apiserver creates it from --service-cluster-ip-range and the API refuses any change of its ranges; it is not touched. Once every kube-apiserver runs without the %s range, delete it by hand when no Service holds an address in it: the apiserver re-creates it from its flags", DefaultServiceCIDR, strings.Join(gone, ","), f))
			continue
		}
		if len(keep) > 0 {
			st, err := newServiceCIDR(s, ServiceCIDRSpec{Name: shrunkName(obj.Name, otherFamily(f)), CIDRs: keep}, keepP)
			if err != nil {
				return nil, nil, fmt.Errorf("shrinking ServiceCIDR %s: %w", obj.Name, err)
			}
			for i := range st {
				if st[i].Action == ActCreateServiceCIDR {
					st[i].Description = fmt.Sprintf("create ServiceCIDR %s (%s) to keep the %s ranges of %s (a ServiceCIDR's ranges cannot be changed)", st[i].ServiceCIDR.Name, strings.Join(keep, ","), otherFamily(f), obj.Name)
				}
			}
			cidrSteps = append(cidrSteps, st...)
		}
		cidrSteps = append(cidrSteps, Step{Action: ActDeleteServiceCIDR, ServiceCIDR: &ServiceCIDRSpec{Name: obj.Name, CIDRs: gone}, Unused: gone,
			Description: fmt.Sprintf("once no Service holds an address in %s: delete ServiceCIDR %s", strings.Join(gone, ","), obj.Name)})
	}
	edit := &PoolEdit{RemoveFamily: f}
	if next, changed, err := edit.ApplyTo(s.Config); err != nil {
		return nil, nil, err
	} else if changed {
		// Reservations are not checked here: the downgrades before this
		// step free the ones of the addresses they drop. apply checks the
		// live document and reservations when it gets there.
		if _, err := alloc.Compile(next, s.Prefixes()); err != nil {
			return nil, nil, fmt.Errorf("the pool document without %s would be invalid: %w", f, err)
		}
		unused := all
		if len(unused) == 0 {
			// No ServiceCIDR of f is left (the pools list addresses
			// outside every range): nothing can hold one.
			unused = []string{familyWide(f)}
		}
		steps = append(steps, Step{Action: ActEditPools, Pools: edit, Unused: unused,
			Description: fmt.Sprintf("once no Service holds an %s address: remove the %s entries from the pools (and pools left empty)", f, f)})
	}
	return append(steps, cidrSteps...), notes, nil
}

// shrunkName is the replacement of a dual-stack ServiceCIDR that keeps only
// family f: deterministic, so a re-run finds it.
func shrunkName(name string, f corev1.IPFamily) string {
	n := name + "-" + strings.ToLower(string(f))
	if len(n) > 253 {
		n = n[len(n)-253:]
		n = strings.TrimLeft(n, "-.")
	}
	return n
}

func familyWide(f corev1.IPFamily) string {
	if f == corev1.IPv4Protocol {
		return "0.0.0.0/0"
	}
	return "::/0"
}

// firstFreeAfterBand is the lowest address of p above its KEP-3070 static
// band (the part the apiserver's own dynamic allocation prefers, so a
// Service placed there does not take a pool's address) that nobody holds.
// The search is bounded by len(held): it stops at the first free address.
func firstFreeAfterBand(p netip.Prefix, held map[netip.Addr]string) (netip.Addr, bool) {
	r := alloc.RangeFromPrefix(p.Masked())
	a := r.From.Next()
	if band, ok := alloc.StaticBand(p); ok {
		a = band.To.Next()
	}
	last := r.To
	if p.Addr().Is4() {
		last = last.Prev() // broadcast
	}
	for ; a.IsValid() && !last.Less(a); a = a.Next() {
		if held[a] == "" {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// offsetIn maps ip's offset from the start of from onto to. ok is false when
// the result falls outside to, or on to's network address or IPv4
// broadcast (never allocatable).
func offsetIn(ip netip.Addr, from, to netip.Prefix) (netip.Addr, bool) {
	if !from.Contains(ip) || familyOfPrefix(from) != familyOfPrefix(to) {
		return netip.Addr{}, false
	}
	off := new(big.Int).Sub(addrInt(ip), addrInt(from.Addr()))
	cand := new(big.Int).Add(addrInt(to.Addr()), off)
	a, ok := intAddr(cand, to.Addr().Is4())
	if !ok || !to.Contains(a) || a == to.Addr() {
		return netip.Addr{}, false
	}
	if a.Is4() && a == alloc.RangeFromPrefix(to).To {
		return netip.Addr{}, false
	}
	return a, true
}

func addrInt(a netip.Addr) *big.Int {
	if a.Is4() {
		b := a.As4()
		return new(big.Int).SetBytes(b[:])
	}
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}

func intAddr(n *big.Int, v4 bool) (netip.Addr, bool) {
	if n.Sign() < 0 {
		return netip.Addr{}, false
	}
	b := n.Bytes()
	if v4 {
		if len(b) > 4 {
			return netip.Addr{}, false
		}
		var x [4]byte
		copy(x[4-len(b):], b)
		return netip.AddrFrom4(x), true
	}
	if len(b) > 16 {
		return netip.Addr{}, false
	}
	var x [16]byte
	copy(x[16-len(b):], b)
	return netip.AddrFrom16(x), true
}

func planReplacePrimary(s *Snapshot, o Options) (*Plan, error) {
	if !o.CIDR.IsValid() {
		return nil, errors.New("replace-primary needs --cidr (the new range)")
	}
	old := o.OldCIDR
	if !old.IsValid() {
		def, ok := s.ServiceCIDR(DefaultServiceCIDR)
		if !ok || len(def.Spec.CIDRs) == 0 {
			return nil, fmt.Errorf("no ServiceCIDR %q: pass --old-cidr", DefaultServiceCIDR)
		}
		var err error
		if old, err = netip.ParsePrefix(def.Spec.CIDRs[0]); err != nil {
			return nil, fmt.Errorf("ServiceCIDR %q: %w", DefaultServiceCIDR, err)
		}
	}
	old = old.Masked()
	if familyOfPrefix(old) != familyOfPrefix(o.CIDR) {
		return nil, fmt.Errorf("--cidr %s and --old-cidr %s are of different families: changing a family is not a replacement this tool performs", o.CIDR, old)
	}
	if old.Overlaps(o.CIDR) {
		return nil, fmt.Errorf("--cidr %s overlaps --old-cidr %s", o.CIDR, old)
	}
	p := &Plan{Scenario: ReplacePrimary, OldCIDR: old.String()}
	// The old ServiceCIDR objects: every one listing the old range. Their
	// other-family ranges move into the new object too, so that the other
	// family stays allocatable while the old object is Terminating (its
	// allocator is not ready from the moment deletion is requested, docs/dualstack-rules.md §5.3).
	var oldObjs []string
	cidrs := []string{o.CIDR.String()}
	var shared []netip.Prefix
	for _, obj := range s.ServiceCIDRs {
		if !slices.Contains(obj.Spec.CIDRs, old.String()) {
			continue
		}
		if obj.DeletionTimestamp == nil {
			oldObjs = append(oldObjs, obj.Name)
		}
		for _, c := range obj.Spec.CIDRs {
			if q, err := netip.ParsePrefix(c); err == nil && q != old && !slices.Contains(cidrs, c) {
				cidrs = append(cidrs, c)
				shared = append(shared, q)
			}
		}
	}
	name := o.CIDRName
	if name == "" {
		name = cidrName("primary", o.CIDR)
	}
	steps, err := newServiceCIDR(s, ServiceCIDRSpec{Name: name, CIDRs: cidrs}, shared)
	if err != nil {
		return nil, err
	}
	p.Steps = append(p.Steps, steps...)

	// Pools: drain every pool with addresses in the old range; a new pool
	// over the new range takes over as default if the default drains.
	edit := &PoolEdit{Pool: o.PoolName}
	if edit.Pool == "" {
		edit.Pool = name
	}
	if edit.Materialize, err = materialize(s); err != nil {
		return nil, err
	}
	cfg := s.Config
	if edit.Materialize != nil {
		cfg = &alloc.PoolConfig{Pools: []alloc.PoolSpec{*edit.Materialize}, DefaultPool: alloc.StaticBandPool}
	}
	// The old range is added back for compiling: once its ServiceCIDR is
	// gone the pools still list it until the prune step removes it.
	pools, err := alloc.Compile(cfg, appendNew(s.Prefixes(), old))
	if err != nil {
		return nil, fmt.Errorf("current pools: %w", err)
	}
	oldSet := &alloc.IPSet{}
	oldSet.AddRange(alloc.RangeFromPrefix(old))
	for _, pl := range pools.List {
		if _, hit := pl.Addresses.Overlap(oldSet); !hit || pl.Name == edit.Pool {
			continue
		}
		if pl.State != alloc.PoolDraining {
			edit.Drain = append(edit.Drain, pl.Name)
		}
		if pl.Has(otherFamily(familyOfPrefix(old))) {
			p.Notes = append(p.Notes, fmt.Sprintf("pool %s also holds %s addresses: draining it stops new %s pins from it too (split the pool first to keep them)", pl.Name, otherFamily(familyOfPrefix(old)), otherFamily(familyOfPrefix(old))))
		}
		if pools.Default == pl {
			edit.DefaultPool = edit.Pool
		}
	}
	addrs, err := poolAddresses(o.CIDR, o.PoolRange)
	if err != nil {
		return nil, err
	}
	addTo(&edit.Add, familyOfPrefix(o.CIDR), addrs)
	steps, err = poolStep(s, edit, []netip.Prefix{o.CIDR, old}, fmt.Sprintf("add pool %s (%s), mark %v draining", edit.Pool, addrs, edit.Drain))
	if err != nil {
		return nil, err
	}
	p.Steps = append(p.Steps, steps...)
	for _, n := range oldObjs {
		p.Steps = append(p.Steps, Step{Action: ActDeleteServiceCIDR, ServiceCIDR: &ServiceCIDRSpec{Name: n},
			Description: fmt.Sprintf("delete ServiceCIDR %s: it stays Terminating while addresses remain in it, and the apiserver hands out none from it meanwhile", n)})
	}

	// Services: every one with an address in the old range, re-created at the
	// same offset in the new one where that address is free.
	held := map[netip.Addr]string{}
	for i := range s.Services {
		for _, ip := range clusterIPs(&s.Services[i]) {
			held[ip] = key(&s.Services[i])
		}
	}
	for _, r := range s.Reservations {
		if _, ok := held[r.IP]; !ok {
			held[r.IP] = r.Owner.String()
		}
	}
	journaled := map[string]bool{}
	for _, j := range s.Journal {
		journaled[j.Key()] = true
		c := ServiceChange{Namespace: j.Service.Namespace, Name: j.Service.Name, Change: Recreate, Resume: true,
			NewClusterIPs: j.Service.Spec.ClusterIPs, Note: "deleted by an interrupted apply: re-created from the journal"}
		for _, ip := range j.Service.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				held[a] = j.Key()
			}
		}
		p.Services = append(p.Services, c)
	}
	for i := range s.Services {
		svc := &s.Services[i]
		ips := clusterIPs(svc)
		if svc.Spec.Type == corev1.ServiceTypeExternalName || journaled[key(svc)] || !slices.ContainsFunc(ips, old.Contains) {
			continue
		}
		c := ServiceChange{Namespace: svc.Namespace, Name: svc.Name, Change: Recreate, ClusterIPs: svc.Spec.ClusterIPs}
		if isAPIServerService(svc) {
			c.Change = RecreateManually
			c.Note = "left to the apiserver: once it runs with the new --service-cluster-ip-range, delete this Service and it re-creates it in the new range"
			p.Services = append(p.Services, c)
			continue
		}
		kept := true
		var why []string
		for _, ip := range ips {
			if !old.Contains(ip) {
				c.NewClusterIPs = append(c.NewClusterIPs, ip.String())
				continue
			}
			a, ok := offsetIn(ip, old, o.CIDR)
			switch {
			case !ok:
				why = append(why, fmt.Sprintf("%s: its offset lies outside %s", ip, o.CIDR))
			case held[a] != "" && held[a] != key(svc):
				why = append(why, fmt.Sprintf("%s: %s is held by %s", ip, a, held[a]))
				ok = false
			}
			if !ok {
				kept = false
				// The address is chosen here rather than left to the
				// apiserver: its allocator takes the first ready
				// ServiceCIDR of the family in no fixed order, so with
				// another range of the family (an extend, an earlier
				// replacement) the Service would land outside --cidr.
				if b, found := firstFreeAfterBand(o.CIDR, held); found {
					held[b] = key(svc)
					why[len(why)-1] += fmt.Sprintf(", %s instead, the first free address above its static band", b)
					c.NewClusterIPs = append(c.NewClusterIPs, b.String())
					continue
				}
				c.NewClusterIPs = append(c.NewClusterIPs, "")
				continue
			}
			held[a] = key(svc)
			c.NewClusterIPs = append(c.NewClusterIPs, a.String())
		}
		if !kept {
			// clusterIPs cannot name a secondary without the primary; when
			// the primary cannot keep its offset every address is left to
			// the allocator (the webhook's sticky reservation, if it pinned
			// the secondary, gives that one back).
			if c.NewClusterIPs[0] == "" {
				for i := range c.NewClusterIPs {
					c.NewClusterIPs[i] = ""
				}
			}
			c.Note = "offset not kept: " + strings.Join(why, "; ")
		}
		c.OffsetKept = &kept
		p.Services = append(p.Services, c)
	}
	n := 0
	for _, c := range p.Services {
		if c.Change == Recreate {
			n++
		}
	}
	if n > 0 {
		p.Steps = append(p.Steps, Step{Action: ActServices, Description: fmt.Sprintf("re-create %d Service(s) in %s, one at a time (journalled first, so an interrupted run re-creates it)", n, o.CIDR)})
	}
	prune := &PoolEdit{RemoveWithin: old.String()}
	if next, changed, err := prune.ApplyTo(cfgAfter(s, edit)); err == nil && changed {
		_ = next
		p.Steps = append(p.Steps, Step{Action: ActPrunePools, Pools: prune,
			Description: fmt.Sprintf("once no ServiceCIDR lists %s any more, remove its addresses from the pools (a pool outside every ServiceCIDR invalidates the document)", old)})
	}
	p.Notes = append(p.Notes,
		fmt.Sprintf("then, by hand: restart kube-apiserver with %s in --service-cluster-ip-range (and reconfigure kube-proxy, the network plugin, DNS); then delete Service default/kubernetes: the apiserver re-creates it in the new range", o.CIDR),
		"ServiceCIDR objects listing "+old.String()+" stay Terminating while any address (default/kubernetes included) remains in the range")
	return p, nil
}
