package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	networkingv1listers "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

func TestHolderSeesServicesAndIPAddresses(t *testing.T) {
	svcs := NewServiceIPs()
	svcs.Update(nil, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"}}})
	svcs.Update(nil, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "dual"},
		Spec: corev1.ServiceSpec{ClusterIP: "fd00:10:96:0:0::5", ClusterIPs: []string{"fd00:10:96:0:0::5", "10.96.0.5"}}})
	svcs.Update(nil, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ext"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "x.example", ClusterIP: "10.96.0.9"}})
	addrs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = addrs.Add(&networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "10.96.0.7"},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: "hidden", Name: "svc"}}})
	h := Holder(svcs, networkingv1listers.NewIPAddressLister(addrs))
	for ip, want := range map[string]string{
		"10.96.0.1":     "default/kubernetes",
		"fd00:10:96::5": "a/dual", // canonical text finds a non-canonical spelling
		"10.96.0.5":     "a/dual",
		"10.96.0.7":     "hidden/svc", // an excluded namespace: only its IPAddress tells
		"10.96.0.9":     "",           // ExternalName holds nothing
		"10.96.0.8":     "",
	} {
		got, held := h(netip.MustParseAddr(ip))
		if got != want || held != (want != "") {
			t.Errorf("Holder(%s) = %q, %v; want %q", ip, got, held, want)
		}
	}
}

func TestCIDRsFromServiceCIDRObjects(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	now := metav1.Now()
	_ = idx.Add(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.100.0.0/24"}}})
	_ = idx.Add(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"fd00:10:96::/108", "10.96.0.0/16"}}})
	_ = idx.Add(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "going", DeletionTimestamp: &now}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.200.0.0/24"}}})
	w := &PoolWatcher{ServiceCIDRs: networkingv1listers.NewServiceCIDRLister(idx)}
	got, err := w.CIDRs()
	if err != nil {
		t.Fatal(err)
	}
	if s := joinPrefixes(got); s != "fd00:10:96::/108,10.96.0.0/16,10.100.0.0/24" {
		t.Errorf("CIDRs = %s, want the default ServiceCIDR first and no terminating one", s)
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

const poolsDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: web
pools:
- name: web
  addresses: {ipv4: ["10.96.0.16/28"]}
`

func TestPoolWatcherFollowsTheConfigMap(t *testing.T) {
	cms := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	w := &PoolWatcher{
		StaticCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		ConfigMaps:  corev1listers.NewConfigMapLister(cms),
		Namespace:   "dsw", Name: "pools",
	}
	set := func(doc string) {
		_ = cms.Update(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dsw", Name: "pools"}, Data: map[string]string{alloc.ConfigMapKey: doc}})
	}
	// Absent ConfigMap: the static band.
	pools, err := w.Initial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pools.Get(alloc.StaticBandPool); !ok {
		t.Fatalf("without the ConfigMap, pools = %v, want the static band", pools.List)
	}
	st := memory.New()
	a, err := alloc.New(st, pools, alloc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	set(poolsDoc)
	if err := w.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Pools().Get("web"); !ok {
		t.Fatal("the ConfigMap's pool was not applied")
	}
	res, err := a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "d", Name: "s"}, Families: []corev1.IPFamily{corev1.IPv4Protocol}})
	if err != nil || res.IPs[0].String() != "10.96.0.16" {
		t.Fatalf("Reserve = %v, %v; want 10.96.0.16 from pool web", res.IPs, err)
	}

	// An edit that orphans the address in use is refused; the pools stay.
	set(strings.Replace(poolsDoc, "10.96.0.16/28", "10.96.0.32/28", 1))
	if err := w.Apply(ctx, a); err == nil || !strings.Contains(err.Error(), "10.96.0.16") {
		t.Fatalf("orphaning edit: err = %v, want a refusal naming 10.96.0.16", err)
	}
	if p, _ := a.Pools().Get("web"); p == nil || !p.Addresses.Contains(netip.MustParseAddr("10.96.0.16")) {
		t.Fatal("the refused edit replaced the pools in force")
	}
	// A document that does not parse at start: the static band, logged.
	set("apiVersion: nope")
	if p, err := w.Initial(context.Background()); err != nil {
		t.Fatal(err)
	} else if _, ok := p.Get(alloc.StaticBandPool); !ok {
		t.Error("an unusable document at start should fall back to the static band")
	}
}

func TestLiveHolderReadsTheIPAddressObject(t *testing.T) {
	objs := map[string]*networkingv1.IPAddress{
		"10.96.0.7": {ObjectMeta: metav1.ObjectMeta{Name: "10.96.0.7"}, Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: "a", Name: "web"}}},
	}
	get := func(_ context.Context, name string) (*networkingv1.IPAddress, error) {
		if name == "10.96.0.66" {
			return nil, errors.New("connection refused")
		}
		if o, ok := objs[name]; ok {
			return o, nil
		}
		return nil, apierrors.NewNotFound(networkingv1.Resource("ipaddresses"), name)
	}
	h := LiveHolder(get)
	for ip, want := range map[string]struct {
		owner string
		held  bool
		err   bool
	}{
		"10.96.0.7":  {"a/web", true, false},
		"10.96.0.8":  {"", false, false},
		"10.96.0.66": {"", false, true},
	} {
		owner, held, err := h(context.Background(), netip.MustParseAddr(ip))
		if owner != want.owner || held != want.held || (err != nil) != want.err {
			t.Errorf("LiveHolder(%s) = %q, %v, %v; want %q, %v, err %v", ip, owner, held, err, want.owner, want.held, want.err)
		}
	}
}

// poolShapes is the pool of poolsDoc per cluster shape (IPv4, IPv6, both
// orders): the ServiceCIDRs, the pool's addresses replacing poolsDoc's
// IPv4 one, and its lowest address in the primary family.
var poolShapes = map[string]struct {
	cidrs string
	pool  string // the pool's addresses
	first string // its lowest address
}{
	"IPv4":      {"10.96.0.0/16", `{ipv4: ["10.96.0.16/28"]}`, "10.96.0.16"},
	"IPv6":      {"fd00:10:96::/108", `{ipv6: ["fd00:10:96::10/124"]}`, "fd00:10:96::10"},
	"IPv4,IPv6": {"10.96.0.0/16,fd00:10:96::/108", `{ipv4: ["10.96.0.16/28"], ipv6: ["fd00:10:96::10/124"]}`, "10.96.0.16"},
	"IPv6,IPv4": {"fd00:10:96::/108,10.96.0.0/16", `{ipv4: ["10.96.0.16/28"], ipv6: ["fd00:10:96::10/124"]}`, "fd00:10:96::10"},
}

// TestPoolWatcherKeepsTheLastGoodPools: while serving, deleting the pools
// ConfigMap or replacing its document with garbage leaves the last good
// pools in force (addresses keep coming from them), and each is reported
// once by a Warning Event on the ConfigMap and by the metrics; a good
// document again clears the stale flag. A ConfigMap that never existed is
// the static band, reported as nothing. Every cluster shape.
func TestPoolWatcherKeepsTheLastGoodPools(t *testing.T) {
	for name, c := range poolShapes {
		t.Run(name, func(t *testing.T) {
			cidrs, err := alloc.ParseServiceCIDRs(c.cidrs)
			if err != nil {
				t.Fatal(err)
			}
			doc := strings.Replace(poolsDoc, `{ipv4: ["10.96.0.16/28"]}`, c.pool, 1)
			cms := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
			rec := record.NewFakeRecorder(10)
			reg := prometheus.NewRegistry()
			m, err := NewPoolMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			w := &PoolWatcher{StaticCIDRs: cidrs, ConfigMaps: corev1listers.NewConfigMapLister(cms), Namespace: "dsw", Name: "pools", Recorder: rec, Metrics: m}
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dsw", Name: "pools"}}
			set := func(doc string) {
				cm = cm.DeepCopy()
				cm.Data = map[string]string{alloc.ConfigMapKey: doc}
				_ = cms.Update(cm)
			}
			pools, err := w.Initial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			a, err := alloc.New(memory.New(), pools, alloc.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			// Never created: the static band, nothing to report.
			if err := w.Apply(ctx, a); err != nil {
				t.Fatalf("no ConfigMap: %v", err)
			}
			set(doc)
			if err := w.Apply(ctx, a); err != nil {
				t.Fatal(err)
			}
			fam := alloc.FamilyOf(cidrs[0].Addr())
			reserve := func(svc string) string {
				t.Helper()
				res, err := a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "d", Name: svc}, Families: []corev1.IPFamily{fam}})
				if err != nil {
					t.Fatal(err)
				}
				return res.IPs[0].String()
			}
			if got := reserve("a"); got != c.first {
				t.Fatalf("from the ConfigMap's pool: %s, want %s", got, c.first)
			}
			wantReport := func(what, reason string, stale float64, events int) {
				t.Helper()
				if p, ok := a.Pools().Get("web"); !ok || p == nil {
					t.Errorf("%s: pool web no longer in force: %v", what, a.Pools().List)
				}
				if got := metricValue(t, m.Stale); got != stale {
					t.Errorf("%s: dualstack_webhook_pools_stale = %g, want %g", what, got, stale)
				}
				if reason != "" {
					if got := metricValue(t, m.Rejected.WithLabelValues(reason)); got != 1 {
						t.Errorf("%s: dualstack_webhook_pools_rejected_total{reason=%q} = %g, want 1", what, reason, got)
					}
				}
				for range events {
					select {
					case e := <-rec.Events:
						if !strings.HasPrefix(e, "Warning "+ReasonPoolsNotApplied+" pools not applied ("+reason+")") {
							t.Errorf("%s: event %q", what, e)
						}
					default:
						t.Errorf("%s: no Event", what)
					}
				}
				select {
				case e := <-rec.Events:
					t.Errorf("%s: unexpected Event %q", what, e)
				default:
				}
			}

			// Deleted: the pools stay, reported once however often the
			// watcher runs again.
			_ = cms.Delete(cm)
			for range 3 {
				if err := w.Apply(ctx, a); !errors.Is(err, ErrPoolsDeleted) {
					t.Fatalf("deleted: %v, want ErrPoolsDeleted", err)
				}
			}
			wantReport("deleted", "deleted", 1, 1)
			if got := reserve("b"); !pools.InServiceCIDR(netip.MustParseAddr(got)) || got == c.first {
				t.Fatalf("after the delete: %s", got)
			} else if p, _ := a.Pools().Get("web"); !p.Addresses.Contains(netip.MustParseAddr(got)) {
				t.Errorf("after the delete: %s is not from pool web", got)
			}

			// Re-created with garbage: still the last good pools.
			set("{{{ this is not a pools document")
			for range 2 {
				if err := w.Apply(ctx, a); err == nil {
					t.Fatal("garbage applied")
				}
			}
			wantReport("garbage", "invalid", 1, 1)

			// A valid document again: applied, no longer stale.
			set(doc)
			if err := w.Apply(ctx, a); err != nil {
				t.Fatal(err)
			}
			wantReport("good again", "", 0, 0)
		})
	}
}

func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}
