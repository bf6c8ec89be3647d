package ops

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// DefaultServiceCIDR is the ServiceCIDR the apiserver creates from its
// --service-cluster-ip-range: its spec.cidrs order is the cluster's family
// order, primary first.
const DefaultServiceCIDR = "kubernetes"

// DefaultPoolsConfigMap is the ConfigMap (in the webhook's namespace) whose
// key alloc.ConfigMapKey holds the pool document.
const DefaultPoolsConfigMap = "dualstack-webhook-pools"

// Snapshot is everything the operator commands decide on, read once. The
// webhook reads the same objects: the pools ConfigMap, the reservation
// ConfigMaps, ServiceCIDRs, Services and Namespaces.
type Snapshot struct {
	// Namespace is the webhook's namespace (pools and state ConfigMaps).
	Namespace string
	// PoolsConfigMap is the pools ConfigMap's name.
	PoolsConfigMap string
	// PoolsExists says whether the pools ConfigMap exists at all.
	PoolsExists bool
	// Config is the pools document in force (see PoolsSource).
	Config *alloc.PoolConfig
	// PoolsSource says where Config comes from: the pools ConfigMap, the
	// record of the last document the replicas applied from it (when the
	// ConfigMap is absent or its document does not parse: what the
	// replicas pin from then), or neither (the static band).
	PoolsSource string
	// PoolsNote says why Config is not the ConfigMap's, or that the
	// ConfigMap differs from what the replicas last applied; "" otherwise.
	PoolsNote string
	// applied is the record's document (nil: no usable record).
	applied *alloc.PoolConfig
	// ServiceCIDRs are the cluster's ServiceCIDR objects, DefaultServiceCIDR
	// first, then by name.
	ServiceCIDRs []networkingv1.ServiceCIDR
	// Services are every Service of the cluster.
	Services []corev1.Service
	// NamespaceLabels are the labels of every Namespace.
	NamespaceLabels map[string]map[string]string
	// Reservations are the allocator's records.
	Reservations []alloc.Reservation
	// Journal holds Services that apply deleted to re-create and has not
	// re-created yet (an interrupted replace-primary).
	Journal []JournalEntry
}

// Prefixes returns every prefix of every ServiceCIDR, the default
// ServiceCIDR's first (primary family first), without duplicates.
func (s *Snapshot) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, sc := range s.ServiceCIDRs {
		for _, c := range sc.Spec.CIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				continue // the apiserver validates ServiceCIDRs; nothing to do with garbage
			}
			p = p.Masked()
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// Families returns the cluster's families, primary first, from the default
// ServiceCIDR (what the apiserver serves), or from the first prefixes when it
// is missing.
func (s *Snapshot) Families() []corev1.IPFamily {
	var fams []corev1.IPFamily
	for _, sc := range s.ServiceCIDRs {
		if sc.Name != DefaultServiceCIDR {
			continue
		}
		for _, c := range sc.Spec.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && !slices.Contains(fams, alloc.FamilyOf(p.Addr())) {
				fams = append(fams, alloc.FamilyOf(p.Addr()))
			}
		}
	}
	if len(fams) == 0 {
		for _, p := range s.Prefixes() {
			if !slices.Contains(fams, alloc.FamilyOf(p.Addr())) {
				fams = append(fams, alloc.FamilyOf(p.Addr()))
			}
		}
	}
	return fams
}

// Pools compiles the pool document against every ServiceCIDR.
func (s *Snapshot) Pools() (*alloc.Pools, error) {
	p, err := alloc.Compile(s.Config, s.Prefixes())
	if err != nil {
		return nil, fmt.Errorf("pools ConfigMap %s/%s: %w", s.Namespace, s.PoolsConfigMap, err)
	}
	return p, nil
}

// ServiceCIDR returns the ServiceCIDR object called name.
func (s *Snapshot) ServiceCIDR(name string) (*networkingv1.ServiceCIDR, bool) {
	for i := range s.ServiceCIDRs {
		if s.ServiceCIDRs[i].Name == name {
			return &s.ServiceCIDRs[i], true
		}
	}
	return nil, false
}

// sortServiceCIDRs puts the default ServiceCIDR first, then the rest by name.
func sortServiceCIDRs(l []networkingv1.ServiceCIDR) {
	sort.SliceStable(l, func(i, j int) bool {
		di, dj := l[i].Name == DefaultServiceCIDR, l[j].Name == DefaultServiceCIDR
		if di != dj {
			return di
		}
		return l[i].Name < l[j].Name
	})
}

// Load reads a Snapshot from the cluster. Reservations come from the same
// ConfigMap store the webhook uses (its informer is started and stopped
// here), so their parsing cannot drift from the webhook's.
func Load(ctx context.Context, c kubernetes.Interface, namespace, poolsConfigMap string) (*Snapshot, error) {
	s := &Snapshot{Namespace: namespace, PoolsConfigMap: poolsConfigMap, NamespaceLabels: map[string]map[string]string{}}
	cm, err := c.CoreV1().ConfigMaps(namespace).Get(ctx, poolsConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = nil
	case err != nil:
		return nil, fmt.Errorf("reading pools ConfigMap %s/%s: %w", namespace, poolsConfigMap, err)
	default:
		s.PoolsExists = true
	}
	if err := s.loadPools(ctx, c, cm); err != nil {
		return nil, err
	}
	// The reads are independent; at cluster scale (20,000 Services, as
	// many reservation ConfigMaps) each is a large list the apiserver
	// encodes and this process decodes, so they run at once rather than
	// one after the other.
	var (
		wg                                 sync.WaitGroup
		cidrs                              *networkingv1.ServiceCIDRList
		svcs                               *corev1.ServiceList
		nss                                *corev1.NamespaceList
		cidrErr, svcErr, nsErr, rErr, jErr error
	)
	for _, f := range []func(){
		func() { cidrs, cidrErr = c.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{}) },
		func() { svcs, svcErr = c.CoreV1().Services("").List(ctx, metav1.ListOptions{}) },
		func() { nss, nsErr = c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}) },
		func() { s.Reservations, rErr = loadReservations(ctx, c, namespace) },
		func() { s.Journal, jErr = loadJournal(ctx, c, namespace) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
	switch {
	case cidrErr != nil:
		return nil, fmt.Errorf("listing ServiceCIDRs (networking.k8s.io/v1, Kubernetes >= 1.33): %w", cidrErr)
	case svcErr != nil:
		return nil, fmt.Errorf("listing Services: %w", svcErr)
	case nsErr != nil:
		return nil, fmt.Errorf("listing Namespaces: %w", nsErr)
	case rErr != nil:
		return nil, rErr
	case jErr != nil:
		return nil, jErr
	}
	s.ServiceCIDRs = cidrs.Items
	sortServiceCIDRs(s.ServiceCIDRs)
	s.Services = svcs.Items
	sort.Slice(s.Services, func(i, j int) bool { return key(&s.Services[i]) < key(&s.Services[j]) })
	for _, ns := range nss.Items {
		s.NamespaceLabels[ns.Name] = ns.Labels
	}
	return s, nil
}

// Where Snapshot.Config comes from.
const (
	PoolsFromConfigMap  = "configmap"
	PoolsFromRecord     = "applied-record"
	PoolsFromStaticBand = "static-band"
)

// poolsChoice is the pools document in force, as a starting replica picks
// it: the ConfigMap's when it parses; else the record of the last one the
// replicas applied from it, if that parses; else, when the ConfigMap is
// absent, no pools (the static band). cmErr set and source empty: the
// ConfigMap does not parse and there is no usable record.
type poolsChoice struct {
	cfg    *alloc.PoolConfig
	doc    string // the chosen document's text
	source string // PoolsFrom*
	cmErr  error  // the ConfigMap's parse error
	// rec is the record ConfigMap (nil: none), applied its parsed document
	// (nil: none or recErr).
	rec     *corev1.ConfigMap
	applied *alloc.PoolConfig
	recErr  error
}

func choosePools(ctx context.Context, c kubernetes.Interface, namespace, pools string, cm *corev1.ConfigMap) (poolsChoice, error) {
	var ch poolsChoice
	var fromCM *alloc.PoolConfig
	fromCM, ch.cmErr = alloc.ConfigFromConfigMap(cm)
	recName := alloc.AppliedConfigMapName(pools)
	rec, err := c.CoreV1().ConfigMaps(namespace).Get(ctx, recName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return ch, fmt.Errorf("reading the applied-pools record %s/%s: %w", namespace, recName, err)
	default:
		ch.rec = rec
		ch.applied, ch.recErr = alloc.ConfigFromConfigMap(rec)
	}
	switch {
	case cm != nil && ch.cmErr == nil:
		ch.cfg, ch.doc, ch.source = fromCM, cm.Data[alloc.ConfigMapKey], PoolsFromConfigMap
	case ch.applied != nil:
		ch.cfg, ch.doc, ch.source = ch.applied, rec.Data[alloc.ConfigMapKey], PoolsFromRecord
	case ch.cmErr == nil:
		ch.cfg, ch.source = fromCM, PoolsFromStaticBand
	}
	return ch, nil
}

// loadPools sets Config, PoolsSource and PoolsNote from choosePools. A
// document that does not parse, without a record, is an error: plan and
// apply must not edit around it.
func (s *Snapshot) loadPools(ctx context.Context, c kubernetes.Interface, cm *corev1.ConfigMap) error {
	ch, err := choosePools(ctx, c, s.Namespace, s.PoolsConfigMap, cm)
	if err != nil {
		return err
	}
	if ch.source == "" {
		return ch.cmErr
	}
	s.Config, s.PoolsSource, s.applied = ch.cfg, ch.source, ch.applied
	where := s.Namespace + "/" + s.PoolsConfigMap
	recName := alloc.AppliedConfigMapName(s.PoolsConfigMap)
	switch {
	case ch.source == PoolsFromConfigMap && ch.applied != nil && ch.rec.Data[alloc.ConfigMapKey] != ch.doc:
		s.PoolsNote = fmt.Sprintf("pools ConfigMap %s differs from the last document the replicas applied (%s): a change not applied yet, or refused (Events with reason PoolsNotApplied say why)", where, recName)
	case ch.source == PoolsFromRecord:
		why := "absent"
		if ch.cmErr != nil {
			why = ch.cmErr.Error()
		}
		s.PoolsNote = fmt.Sprintf("pools ConfigMap %s: %s; the replicas pin from the last document applied from it, recorded in %s", where, why, recName)
	case ch.source == PoolsFromStaticBand && ch.recErr != nil:
		s.PoolsNote = fmt.Sprintf("the applied-pools record is unusable (%v), ignored", ch.recErr)
	}
	return nil
}

// poolsBase is the document apply edits, chosen as the plan's was
// (choosePools); without a choice, the ConfigMap's own text, whose parse
// error EditDocument then reports.
func poolsBase(ctx context.Context, c kubernetes.Interface, namespace, pools string, cm *corev1.ConfigMap) (string, error) {
	ch, err := choosePools(ctx, c, namespace, pools, cm)
	if err != nil || ch.source != "" || cm == nil {
		return ch.doc, err
	}
	return cm.Data[alloc.ConfigMapKey], nil
}

// PoolsInForce compiles Config like Pools, except that a ConfigMap whose
// document parses but does not compile (a range outside every
// ServiceCIDR) gives way to the applied record, as it does in the
// replicas; the source and note then say so.
func (s *Snapshot) PoolsInForce() (pools *alloc.Pools, source, note string, err error) {
	p, err := s.Pools()
	if err == nil || s.PoolsSource != PoolsFromConfigMap || s.applied == nil {
		return p, s.PoolsSource, s.PoolsNote, err
	}
	rp, rerr := alloc.Compile(s.applied, s.Prefixes())
	if rerr != nil {
		return nil, "", "", err
	}
	return rp, PoolsFromRecord, fmt.Sprintf("%v; the replicas pin from the last document applied from it, recorded in %s",
		err, alloc.AppliedConfigMapName(s.PoolsConfigMap)), nil
}

func loadReservations(ctx context.Context, c kubernetes.Interface, namespace string) ([]alloc.Reservation, error) {
	st, err := configmap.New(c, configmap.Options{Namespace: namespace})
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); st.Shutdown() }()
	if err := st.Start(ictx); err != nil {
		return nil, fmt.Errorf("reading reservation ConfigMaps in %s: %w", namespace, err)
	}
	rs, err := st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading reservation ConfigMaps in %s: %w", namespace, err)
	}
	return rs, nil
}

func key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// clusterIPs returns a Service's allocated addresses (none for headless and
// ExternalName Services), in spec order.
func clusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if strings.EqualFold(s, corev1.ClusterIPNone) {
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
