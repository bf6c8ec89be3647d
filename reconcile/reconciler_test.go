package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	networkingv1listers "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
)

const (
	grace     = 2 * time.Minute
	retention = 24 * time.Hour
)

// clusters: every test runs on the four shapes; fams[0] is primary.
var clusters = map[string][]string{
	"IPv4":      {"10.96.0.0/16"},
	"IPv6":      {"fd00:10:96::/108"},
	"IPv4,IPv6": {"10.96.0.0/16", "fd00:10:96::/108"},
	"IPv6,IPv4": {"fd00:10:96::/108", "10.96.0.0/16"},
}

// band[f][i] is the i-th address of family f's static band.
var band = map[corev1.IPFamily][]string{
	corev1.IPv4Protocol: {"10.96.0.1", "10.96.0.2", "10.96.0.3"},
	corev1.IPv6Protocol: {"fd00:10:96::1", "fd00:10:96::2", "fd00:10:96::3"},
}

type env struct {
	t        *testing.T
	ctx      context.Context
	clock    *clocktesting.FakeClock
	store    *memory.Store
	alloc    *alloc.Allocator
	services cache.Indexer // SlimServices, as the informer caches them
	ips      *ServiceIPs   // kept with services by put and remove, as the informer's handler does
	ipaddrs  cache.Indexer // IPAddress objects (networking.k8s.io/v1)
	events   *record.FakeRecorder
	metrics  *Metrics
	reg      *prometheus.Registry
	r        *Reconciler
	fams     []corev1.IPFamily
	synced   bool
	seen     []string // events drained but not yet checked
}

func newEnv(t *testing.T, cidrs []string) *env {
	t.Helper()
	var ps []netip.Prefix
	var fams []corev1.IPFamily
	for _, s := range cidrs {
		p := netip.MustParsePrefix(s)
		ps = append(ps, p)
		fams = append(fams, alloc.FamilyOf(p.Addr()))
	}
	pools, err := alloc.Compile(nil, ps)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: context.Background(), fams: fams, synced: true}
	e.clock = clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	e.store = memory.New()
	e.services = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	e.ips = NewServiceIPs()
	e.ipaddrs = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	e.alloc, err = alloc.New(e.store, pools, alloc.Options{
		Clock: e.clock, PendingGrace: grace, Retention: retention,
		External: Holder(e.ips, networkingv1listers.NewIPAddressLister(e.ipaddrs)),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.reg = prometheus.NewRegistry()
	if e.metrics, err = NewMetrics(e.reg, e.alloc.Pools, e.store); err != nil {
		t.Fatal(err)
	}
	e.events = record.NewFakeRecorder(100)
	e.r, err = New(Options{
		Allocator: e.alloc, Store: e.store, Services: NewSlimServiceLister(e.services, false),
		Synced: func() bool { return e.synced }, Recorder: e.events, Metrics: e.metrics, Clock: e.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// admit reserves like /mutate does for a Service that does not exist yet.
func (e *env) admit(owner alloc.Owner, fams ...corev1.IPFamily) []string {
	e.t.Helper()
	res, err := e.alloc.Reserve(e.ctx, alloc.Request{Owner: owner, Families: fams})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, a := range res.IPs {
		out = append(out, a.String())
	}
	return out
}

// live puts a Service into the cache as the apiserver stored it.
func (e *env) live(ns, name, uid string, ips ...string) {
	e.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: ips},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	e.put(s)
}

// put stores s in the cache, replacing the Service of its name.
func (e *env) put(s *corev1.Service) {
	e.t.Helper()
	// As the informer caches it.
	slim := NewSlimService(s)
	old, _, _ := e.services.Get(slim)
	if err := e.services.Update(slim); err != nil {
		e.t.Fatal(err)
	}
	e.ips.Update(old, slim)
}

func (e *env) remove(ns, name string) {
	e.t.Helper()
	obj, ok, _ := e.services.GetByKey(ns + "/" + name)
	if !ok {
		e.t.Fatalf("no Service %s/%s", ns, name)
	}
	if err := e.services.Delete(obj); err != nil {
		e.t.Fatal(err)
	}
	e.ips.Update(obj, nil)
}

func (e *env) sync() time.Time {
	e.t.Helper()
	next, err := e.r.Sync(e.ctx)
	if err != nil {
		e.t.Fatalf("Sync: %v", err)
	}
	return next
}

func (e *env) get(ip string) (alloc.Reservation, bool) {
	e.t.Helper()
	r, ok, err := e.store.Get(e.ctx, netip.MustParseAddr(ip))
	if err != nil {
		e.t.Fatal(err)
	}
	return r, ok
}

func (e *env) wantState(ip string, st alloc.State, owner string) alloc.Reservation {
	e.t.Helper()
	r, ok := e.get(ip)
	if !ok {
		e.t.Fatalf("%s: no reservation, want %s for %s", ip, st, owner)
	}
	if r.State != st || r.Owner.String() != owner {
		e.t.Fatalf("%s: %s for %s, want %s for %s", ip, r.State, r.Owner, st, owner)
	}
	return r
}

func (e *env) wantFree(ip string) {
	e.t.Helper()
	if r, ok := e.get(ip); ok {
		e.t.Fatalf("%s: still %s for %s, want free", ip, r.State, r.Owner)
	}
}

// wantEvent finds (and consumes) a recorded event of that reason containing
// the text, in any order; the fake recorder writes synchronously, so after
// Sync returns an event is there or not.
func (e *env) wantEvent(reason, contains string) {
	e.t.Helper()
	e.drain()
	for i, ev := range e.seen {
		if strings.Contains(ev, " "+reason+" ") && strings.Contains(ev, contains) {
			e.seen = append(e.seen[:i], e.seen[i+1:]...)
			return
		}
	}
	e.t.Fatalf("no event %s containing %q among %q", reason, contains, e.seen)
}

func (e *env) drain() {
	for {
		select {
		case ev := <-e.events.Events:
			e.seen = append(e.seen, ev)
		default:
			return
		}
	}
}

func (e *env) noEvents() {
	e.t.Helper()
	e.drain()
	if len(e.seen) > 0 {
		e.t.Fatalf("unexpected events %q", e.seen)
	}
}

func forEachCluster(t *testing.T, f func(t *testing.T, e *env)) {
	for name, cidrs := range clusters {
		t.Run(name, func(t *testing.T) { f(t, newEnv(t, cidrs)) })
	}
}

func TestConfirmBindsPendingToTheLiveService(t *testing.T) {
	forEachCluster(t, testConfirmBindsPendingToTheLiveService)
}

// TestSyncWithAListOnlyStore: a store without alloc.SharedLister (nor the
// per-Service reads) is listed with copies; the sync does the same.
func TestSyncWithAListOnlyStore(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		r, err := New(Options{Allocator: e.alloc, Store: struct{ ReservationLister }{e.store}, Services: NewSlimServiceLister(e.services, false),
			Recorder: e.events, Metrics: e.metrics, Clock: e.clock})
		if err != nil {
			t.Fatal(err)
		}
		e.r = r
		testConfirmBindsPendingToTheLiveService(t, e)
	})
}

func testConfirmBindsPendingToTheLiveService(t *testing.T, e *env) {
	ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web", RequestUID: "r1"}, e.fams...)
	e.sync() // the Service is not there yet: stays pending, no event
	e.wantState(ips[0], alloc.StatePending, "demo/web")
	e.noEvents()

	e.live("demo", "web", "uid-web", ips...)
	e.sync()
	for _, ip := range ips {
		r := e.wantState(ip, alloc.StateBound, "demo/web")
		if r.Owner.UID != "uid-web" || !r.Expires.IsZero() {
			t.Errorf("%s: uid %q expires %v, want uid-web and no expiry", ip, r.Owner.UID, r.Expires)
		}
		e.wantEvent(ReasonPinned, ip)
	}
	// Idempotent: a second pass writes and says nothing.
	before, _ := e.get(ips[0])
	e.sync()
	after, _ := e.get(ips[0])
	if before.Version != after.Version {
		t.Error("a second Sync rewrote a bound reservation")
	}
	e.noEvents()
}

func TestGenerateNameIsBoundToTheRealName(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		ips := e.admit(alloc.Owner{Namespace: "demo", GenerateName: "web-", RequestUID: "r1"}, e.fams[0])
		e.wantState(ips[0], alloc.StatePending, "demo/web-*")
		e.live("demo", "web-x7k2p", "uid-1", ips...)
		e.sync()
		e.wantState(ips[0], alloc.StateBound, "demo/web-x7k2p")
		e.wantEvent(ReasonPinned, ips[0])
		if n := counterValue(e.metrics.Conflicts); n != 0 {
			t.Errorf("conflicts = %v, want 0", n)
		}
	})
}

func TestPendingWithoutServiceIsFreedAfterTheGrace(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		ips := e.admit(alloc.Owner{Namespace: "demo", Name: "rejected", RequestUID: "r1"}, e.fams...)
		next := e.sync()
		if want := e.clock.Now().Add(grace); !next.Equal(want) {
			t.Errorf("next wake-up %v, want the grace's end %v", next, want)
		}
		e.clock.Step(grace - time.Second)
		e.sync()
		e.wantState(ips[0], alloc.StatePending, "demo/rejected")

		e.clock.Step(time.Second)
		e.sync()
		for _, ip := range ips {
			e.wantFree(ip)
		}
		if n := counterValue(e.metrics.Collected); n != float64(len(ips)) {
			t.Errorf("collected = %v, want %d", n, len(ips))
		}
		// The address is handed out again.
		if got := e.admit(alloc.Owner{Namespace: "demo", Name: "next"}, e.fams[0]); got[0] != ips[0] {
			t.Errorf("next Service got %s, want the freed %s", got[0], ips[0])
		}
	})
}

// TestPendingOfALiveServiceTheCacheMissesIsKept: the Service cache can lag
// a create by more than the grace on a loaded control plane (the soak saw
// 3 s and more). An expired pending reservation whose owner the apiserver
// shows holding the address is kept; it is freed once the owner is gone or
// holds other addresses, and kept while the live read fails.
func TestPendingOfALiveServiceTheCacheMissesIsKept(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web", RequestUID: "r1"}, e.fams...)
		var live *corev1.Service
		var liveErr error
		reads := 0
		e.r.o.GetService = func(_ context.Context, ns, name string) (*corev1.Service, error) {
			reads++
			if ns != "demo" || name != "web" {
				t.Errorf("live read of %s/%s, want demo/web", ns, name)
			}
			if liveErr != nil {
				return nil, liveErr
			}
			if live == nil {
				return nil, apierrors.NewNotFound(corev1.Resource("services"), name)
			}
			return live, nil
		}
		e.clock.Step(grace + time.Second)
		live = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-1"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ips[0], ClusterIPs: ips}}
		e.sync()
		for _, ip := range ips {
			e.wantState(ip, alloc.StatePending, "demo/web")
		}
		if reads == 0 {
			t.Fatal("the owner was not read live")
		}

		liveErr = errors.New("apiserver unreachable")
		e.sync()
		for _, ip := range ips {
			e.wantState(ip, alloc.StatePending, "demo/web")
		}

		liveErr = nil
		live.Spec.ClusterIPs = []string{band[e.fams[0]][2]} // re-created with another address
		live.Spec.ClusterIP = live.Spec.ClusterIPs[0]
		e.sync()
		for _, ip := range ips {
			e.wantFree(ip)
		}

		// Gone altogether: freed too.
		more := e.admit(alloc.Owner{Namespace: "demo", Name: "web", RequestUID: "r2"}, e.fams[0])
		e.clock.Step(grace + time.Second)
		live = nil
		e.sync()
		e.wantFree(more[0])
	})
}

func TestDeleteMakesStickyReCreateGetsItBackRetentionFrees(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
		e.live("demo", "web", "uid-1", ips...)
		e.sync()
		for range ips {
			e.wantEvent(ReasonPinned, "")
		}

		e.remove("demo", "web")
		e.sync()
		for _, ip := range ips {
			r := e.wantState(ip, alloc.StateSticky, "demo/web")
			if want := e.clock.Now().Add(retention); !r.Expires.Equal(want) {
				t.Errorf("%s expires %v, want %v", ip, r.Expires, want)
			}
			e.wantEvent(ReasonReleased, ip)
		}
		// Nobody else gets it meanwhile...
		other := e.admit(alloc.Owner{Namespace: "demo", Name: "other"}, e.fams[0])
		if other[0] == ips[0] {
			t.Fatalf("a sticky address went to another Service")
		}
		// ... but the re-created Service does, and is bound again.
		again := e.admit(alloc.Owner{Namespace: "demo", Name: "web", RequestUID: "r2"}, e.fams...)
		if strings.Join(again, ",") != strings.Join(ips, ",") {
			t.Fatalf("re-created Service got %v, want %v", again, ips)
		}
		e.live("demo", "web", "uid-2", again...)
		e.sync()
		r := e.wantState(ips[0], alloc.StateBound, "demo/web")
		if r.Owner.UID != "uid-2" {
			t.Errorf("bound to uid %q, want the new uid-2", r.Owner.UID)
		}

		// Deleted for good: freed once the retention is over.
		e.remove("demo", "web")
		e.sync()
		e.clock.Step(retention - time.Second)
		e.sync()
		e.wantState(ips[0], alloc.StateSticky, "demo/web")
		e.clock.Step(time.Second)
		e.sync()
		for _, ip := range ips {
			e.wantFree(ip)
		}
	})
}

func TestImportsPinsItDidNotMake(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		p := e.fams[0]
		// Created while the webhook was down: the lowest band address.
		e.live("legacy", "db", "uid-db", band[p][0])
		// Outside every pool (dynamic): not ours to record.
		dyn := map[corev1.IPFamily]string{corev1.IPv4Protocol: "10.96.200.1", corev1.IPv6Protocol: "fd00:10:96::f:1"}[p]
		e.live("legacy", "dyn", "uid-dyn", dyn)
		// default/kubernetes is the apiserver's.
		e.live("default", "kubernetes", "uid-k", band[p][1])
		e.sync()
		e.wantState(band[p][0], alloc.StateBound, "legacy/db")
		e.wantEvent(ReasonImported, band[p][0])
		e.wantFree(dyn)
		e.wantFree(band[p][1])
		e.noEvents()
		if n := counterValue(e.metrics.Imported); n != 1 {
			t.Errorf("imported = %v, want 1", n)
		}
		// Never handed out twice: not the imported one, not kubernetes'.
		if got := e.admit(alloc.Owner{Namespace: "demo", Name: "new"}, p); got[0] != band[p][2] {
			t.Errorf("new Service got %s, want %s", got[0], band[p][2])
		}
	})
}

func TestRebuildsTheStateAfterTheConfigMapsAreDeleted(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		a := e.admit(alloc.Owner{Namespace: "demo", Name: "a"}, e.fams...)
		b := e.admit(alloc.Owner{Namespace: "demo", Name: "b"}, e.fams[0])
		e.live("demo", "a", "uid-a", a...)
		e.live("demo", "b", "uid-b", b...)
		e.sync()
		rs, _ := e.store.List(e.ctx)
		for _, r := range rs {
			if err := e.store.Delete(e.ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		e.sync()
		for _, ip := range a {
			e.wantState(ip, alloc.StateBound, "demo/a")
		}
		e.wantState(b[0], alloc.StateBound, "demo/b")
		if n := counterValue(e.metrics.Imported); n != float64(len(a)+1) {
			t.Errorf("imported = %v, want %d", n, len(a)+1)
		}
	})
}

func TestDowngradeReleasesTheSecondary(t *testing.T) {
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, clusters[name])
			ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
			e.live("demo", "web", "uid-1", ips...)
			e.sync()
			e.wantEvent(ReasonPinned, ips[0])
			e.wantEvent(ReasonPinned, ips[1])

			e.live("demo", "web", "uid-1", ips[0]) // the apiserver accepted SingleStack
			e.sync()
			e.wantState(ips[0], alloc.StateBound, "demo/web")
			e.wantFree(ips[1])
			e.wantEvent(ReasonReleased, ips[1])

			// Upgrade again: the secondary is pinned at admission (pending)
			// and confirmed once the apiserver stored it.
			sec := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams[1])
			e.live("demo", "web", "uid-1", ips[0], sec[0])
			e.sync()
			e.wantState(sec[0], alloc.StateBound, "demo/web")
		})
	}
}

// TestDowngradeOnAStaleCacheFreesNothingHeld: the cache shows a
// downgrade, but the Service was upgraded again at once and holds the
// secondary (the 15-min soak: the address was freed and pinned to another
// Service). It is freed only once the apiserver shows the Service without
// it; a failed read frees nothing.
func TestDowngradeOnAStaleCacheFreesNothingHeld(t *testing.T) {
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, clusters[name])
			ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
			e.live("demo", "web", "uid-1", ips...)
			e.sync()
			e.wantState(ips[1], alloc.StateBound, "demo/web")

			e.live("demo", "web", "uid-1", ips[0]) // the cache's older view
			truth := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-1"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ips[0], ClusterIPs: ips}}
			var readErr error
			e.r.o.GetService = func(context.Context, string, string) (*corev1.Service, error) { return truth, readErr }
			e.sync()
			e.wantState(ips[1], alloc.StateBound, "demo/web")

			readErr = errors.New("apiserver unreachable")
			e.sync()
			e.wantState(ips[1], alloc.StateBound, "demo/web")

			readErr = nil
			truth.Spec.ClusterIPs = ips[:1]
			e.sync()
			e.wantFree(ips[1])
			e.wantState(ips[0], alloc.StateBound, "demo/web")
		})
	}
}

// TestUpgradeAdmittedDuringTheDowngradesFreeKeepsTheAddress: a dual-stack
// Service is downgraded and at once upgraded again; the upgrade's admission
// gets its still bound secondary back while the reconciler, which has just
// seen the downgrade, frees it: neither the Service cache nor a live read
// shows an upgrade before it is stored. The 15-min soak: the address was
// freed while the upgrade was in flight, pinned to another Service's create
// 4 ms after the upgrade was stored, taken over by the upgraded Service at
// the next sync, and that create refused ("held by …, bound"). The
// admission must leave a claim that the free does not delete, whether it
// comes before the sync or between the sync's judgement and its delete, and
// whether the webhook picks the address or the Service asks for it.
func TestUpgradeAdmittedDuringTheDowngradesFreeKeepsTheAddress(t *testing.T) {
	web := alloc.Owner{Namespace: "demo", Name: "web"}
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		for _, tc := range []struct {
			name      string
			during    bool // admitted between the judgement and the free
			requested bool // the upgrade names the address itself
		}{
			{name: "admitted before the sync"},
			{name: "admitted during the sync", during: true},
			{name: "requested, admitted during the sync", during: true, requested: true},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t, clusters[name])
				ips := e.admit(web, e.fams...)
				e.live("demo", "web", "uid-1", ips...)
				e.sync()
				e.wantState(ips[1], alloc.StateBound, "demo/web")

				// Downgraded: the cache and the apiserver show it.
				e.live("demo", "web", "uid-1", ips[0])
				truth := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-1"},
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ips[0], ClusterIPs: ips[:1]}}
				upgrade := func() {
					t.Helper()
					req := alloc.Request{Owner: web, Families: e.fams[1:]}
					if tc.requested {
						req = alloc.Request{Owner: web, Requested: []netip.Addr{netip.MustParseAddr(ips[1])}}
					}
					res, err := e.alloc.Reserve(e.ctx, req)
					if err != nil {
						t.Fatalf("upgrade admission: %v", err)
					}
					if !tc.requested && res.IPs[0].String() != ips[1] {
						t.Fatalf("upgrade admission got %s, want its own %s back", res.IPs[0], ips[1])
					}
				}
				admitted := false
				e.r.o.GetService = func(context.Context, string, string) (*corev1.Service, error) {
					if tc.during && !admitted {
						admitted = true
						upgrade()
					}
					return truth.DeepCopy(), nil // the upgrade is not stored yet
				}
				if !tc.during {
					upgrade()
				}
				e.sync()
				if tc.during && !admitted {
					t.Fatal("the sync read no Service live: the interleaving was not exercised")
				}
				e.wantState(ips[1], alloc.StatePending, "demo/web")

				// Another Service's create must not be given it.
				other := e.admit(alloc.Owner{Namespace: "demo", Name: "other"}, e.fams[1])
				if other[0] == ips[1] {
					t.Fatalf("%s pinned to demo/other while demo/web's upgrade holds it", ips[1])
				}

				// The upgrade is stored: bound again.
				e.live("demo", "web", "uid-1", ips...)
				truth.Spec.ClusterIPs = ips
				e.sync()
				e.wantState(ips[1], alloc.StateBound, "demo/web")
			})
		}
	}
}

// TestPendingHandedBackPastItsGraceIsKept: a pending claim past its grace
// (its Service's upgrade was stored and the Service deleted before the
// reconciler confirmed it) is handed back to the Service's re-create while
// the reconciler collects it: its live read finds no Service, the create
// not being stored yet. The 15-min soak: collected 1 ms before the create
// was stored holding it, imported by the reconciler 0.6 s later; in
// between any other create could be given the address. The admission's
// claim must survive the collection, whether it comes before the sync or
// between the sync's judgement and its delete.
func TestPendingHandedBackPastItsGraceIsKept(t *testing.T) {
	web := alloc.Owner{Namespace: "demo", Name: "web"}
	notFound := apierrors.NewNotFound(corev1.Resource("services"), "web")
	forEachCluster(t, func(t *testing.T, e *env) {
		for _, during := range []bool{false, true} {
			t.Run(fmt.Sprintf("during=%v", during), func(t *testing.T) {
				ips := e.admit(web, e.fams...)
				e.clock.Step(grace + time.Second)
				recreate := func() {
					t.Helper()
					res, err := e.alloc.Reserve(e.ctx, alloc.Request{Owner: web, Families: e.fams})
					if err != nil {
						t.Fatalf("re-create admission: %v", err)
					}
					for i, ip := range res.IPs {
						if ip.String() != ips[i] {
							t.Fatalf("re-create got %s, want its claim %s back", ip, ips[i])
						}
					}
				}
				admitted := false
				e.r.o.GetService = func(context.Context, string, string) (*corev1.Service, error) {
					if during && !admitted {
						admitted = true
						recreate()
					}
					return nil, notFound // the create is not stored yet
				}
				if !during {
					recreate()
				}
				e.sync()
				if during && !admitted {
					t.Fatal("the sync read no Service live: the interleaving was not exercised")
				}
				for _, ip := range ips {
					e.wantState(ip, alloc.StatePending, "demo/web")
				}
				other := e.admit(alloc.Owner{Namespace: "demo", Name: "other"}, e.fams...)
				for i, ip := range other {
					if ip == ips[i] {
						t.Fatalf("%s pinned to demo/other while demo/web's create holds it", ip)
					}
				}
				e.live("demo", "web", "uid-web", ips...)
				e.sync()
				for _, ip := range ips {
					e.wantState(ip, alloc.StateBound, "demo/web")
				}
				// Reset for the next variant.
				e.remove("demo", "web")
				for _, ip := range append(ips, other...) {
					if err := e.alloc.Free(e.ctx, netip.MustParseAddr(ip)); err != nil {
						t.Fatal(err)
					}
				}
				e.r.o.GetService = nil
			})
		}
	})
}

// lagging is a reservation listing taken before the claims of interest
// were made (an informer cache seconds behind on a loaded control plane).
type lagging struct{ rs []alloc.Reservation }

func (l lagging) List(context.Context) ([]alloc.Reservation, error) { return l.rs, nil }

// TestPendingMissingFromTheListingIsKeptWhileItsServiceHoldsIt: the sync's
// listing of the reservations predates a pending claim, and its Service
// cache does not show the Service yet, but the Service is stored holding
// the address and the claim's grace is over. The 15-min soak (load 25):
// collected 3.4 s after its Service was stored, imported 0.4 s later. The
// collection judges the claim it deletes, not the listing's older view of
// its address: the owner is read live and the claim kept.
func TestPendingMissingFromTheListingIsKeptWhileItsServiceHoldsIt(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		e.r.o.Store = lagging{} // listed before the claim was made
		ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
		stored := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-web"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ips[0], ClusterIPs: ips}}
		e.r.o.GetService = func(context.Context, string, string) (*corev1.Service, error) { return stored.DeepCopy(), nil }
		e.clock.Step(grace + time.Second)
		e.sync()
		for _, ip := range ips {
			e.wantState(ip, alloc.StatePending, "demo/web")
		}
		// Not held after all: collected.
		e.r.o.GetService = func(context.Context, string, string) (*corev1.Service, error) {
			return nil, apierrors.NewNotFound(corev1.Resource("services"), "web")
		}
		e.sync()
		for _, ip := range ips {
			e.wantFree(ip)
		}
	})
}

func TestTypeChangeToExternalNameReleases(t *testing.T) {
	e := newEnv(t, clusters["IPv4"])
	ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
	e.live("demo", "web", "uid-1", ips...)
	e.sync()
	e.put(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-1"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
	})
	e.sync()
	e.wantFree(ips[0])
}

func TestLiveServiceWinsOverAnotherOwnersReservation(t *testing.T) {
	e := newEnv(t, clusters["IPv4"])
	ips := e.admit(alloc.Owner{Namespace: "demo", Name: "a"}, e.fams...)
	e.live("other", "b", "uid-b", ips...) // the apiserver gave it to b
	e.sync()
	e.wantState(ips[0], alloc.StateBound, "other/b")
	e.wantEvent(ReasonTakenOver, "demo/a")
	if n := counterValue(e.metrics.Conflicts); n != 1 {
		t.Errorf("conflicts = %v, want 1", n)
	}
}

func TestNoSyncOnUnsyncedCaches(t *testing.T) {
	e := newEnv(t, clusters["IPv4"])
	ips := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
	e.live("demo", "web", "uid-1", ips...)
	e.sync()
	e.remove("demo", "web") // looks deleted, but only because the cache is empty
	e.synced = false
	if _, err := e.r.Sync(e.ctx); err == nil {
		t.Fatal("Sync ran on unsynced caches")
	}
	e.wantState(ips[0], alloc.StateBound, "demo/web")
}

func TestPoolGaugePartitionsThePool(t *testing.T) {
	e := newEnv(t, clusters["IPv4,IPv6"])
	a := e.admit(alloc.Owner{Namespace: "demo", Name: "a"}, e.fams...) // pending x2
	b := e.admit(alloc.Owner{Namespace: "demo", Name: "b"}, e.fams[0])
	e.live("demo", "b", "uid-b", b...)
	e.sync() // b bound
	e.admit(alloc.Owner{Namespace: "demo", Name: "c"}, e.fams[0])
	e.live("demo", "c", "uid-c", band[corev1.IPv4Protocol][2])
	e.sync()
	e.remove("demo", "c")
	e.sync() // c sticky
	_ = a

	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "dualstack_webhook_pool_addresses" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got[l["family"]+"/"+l["state"]] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"IPv4/pending": 1, "IPv4/bound": 1, "IPv4/sticky": 1, "IPv4/free": 256 - 3,
		"IPv6/pending": 1, "IPv6/bound": 0, "IPv6/sticky": 0, "IPv6/free": 256 - 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestLeakedIPAddressDoesNotKeepAPendingReservation: kube-apiserver's repair
// controller can leave an IPAddress naming a Service that never got
// persisted; only a live Service keeps an expired pending reservation.
func TestLeakedIPAddressDoesNotKeepAPendingReservation(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		ips := e.admit(alloc.Owner{Namespace: "demo", Name: "gone", RequestUID: "r1"}, e.fams[0])
		_ = e.ipaddrs.Add(&networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: ips[0]},
			Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: "demo", Name: "gone"}}})
		e.clock.Step(grace)
		e.sync()
		e.wantFree(ips[0])
		// Still never handed out while the IPAddress exists.
		if got := e.admit(alloc.Owner{Namespace: "demo", Name: "next"}, e.fams[0]); got[0] == ips[0] {
			t.Fatalf("%s handed out while the apiserver records it", ips[0])
		}
	})
}

// TestSyncServicesTouchesOnlyThoseServices: the per-Service sync of watch
// events binds, imports, frees and releases exactly like the full Sync for
// the Services it is given, and looks at no other (an untouched pending
// reservation stays pending). Once every Service has been touched, a full
// Sync finds nothing left to write. Every cluster shape.
func TestSyncServicesTouchesOnlyThoseServices(t *testing.T) {
	forEachCluster(t, func(t *testing.T, e *env) {
		touch := func(keys ...string) {
			t.Helper()
			if err := e.r.SyncServices(e.ctx, keys); err != nil {
				t.Fatalf("SyncServices(%v): %v", keys, err)
			}
		}
		a := e.admit(alloc.Owner{Namespace: "demo", Name: "a", RequestUID: "r1"}, e.fams...)
		b := e.admit(alloc.Owner{Namespace: "demo", Name: "b", RequestUID: "r2"}, e.fams[0])
		e.live("demo", "a", "uid-a", a...)
		e.live("demo", "b", "uid-b", b...)
		touch("demo/a")
		for _, ip := range a {
			e.wantState(ip, alloc.StateBound, "demo/a")
			e.wantEvent(ReasonPinned, ip)
		}
		e.wantState(b[0], alloc.StatePending, "demo/b") // not touched
		e.noEvents()

		// A Service holding a pool address nobody reserved is imported.
		imported := band[e.fams[0]][2]
		e.live("demo", "c", "uid-c", imported)
		touch("demo/c", "demo/b")
		e.wantState(imported, alloc.StateBound, "demo/c")
		e.wantEvent(ReasonImported, imported)
		e.wantState(b[0], alloc.StateBound, "demo/b")
		e.wantEvent(ReasonPinned, b[0])

		// a lives without its addresses but the primary (downgrade), or
		// turns ExternalName: what it gave up is freed.
		if len(a) == 2 {
			e.live("demo", "a", "uid-a", a[0])
			touch("demo/a")
			e.wantState(a[0], alloc.StateBound, "demo/a")
			e.wantFree(a[1])
			e.wantEvent(ReasonReleased, a[1])
		} else {
			e.put(&corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "a", UID: "uid-a"},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
			})
			touch("demo/a")
			e.wantFree(a[0])
			e.wantEvent(ReasonReleased, a[0])
		}

		// b is deleted: its address stays sticky to its name.
		e.remove("demo", "b")
		touch("demo/b")
		e.wantState(b[0], alloc.StateSticky, "demo/b")
		e.wantEvent(ReasonReleased, b[0])

		// Nothing left for the full comparison to write.
		before, _ := e.store.List(e.ctx)
		e.sync()
		after, _ := e.store.List(e.ctx)
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Errorf("a full Sync after the per-Service ones rewrote the state:\n before %v\n after  %v", before, after)
		}
		e.noEvents()
	})
}

// TestServiceEventsTouchOnlyWhatMatters: creates, deletes and updates of
// what a Service holds are touched; updates of anything else are not.
func TestServiceEventsTouchOnlyWhatMatters(t *testing.T) {
	e := newEnv(t, clusters["IPv4,IPv6"])
	h := ServiceEvents(e.r)
	svc := func(uid string, typ corev1.ServiceType, ips ...string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: types.UID(uid)},
			Spec: corev1.ServiceSpec{Type: typ, ClusterIPs: ips}}
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		return s
	}
	base := svc("u1", corev1.ServiceTypeClusterIP, "10.96.0.2")
	relabelled := base.DeepCopy()
	relabelled.Labels = map[string]string{"x": "y"}
	// Not running (a replica that does not lead): nothing is recorded.
	h.OnAdd(base, false)
	if got := e.r.takeDirty(); len(got) != 0 {
		t.Errorf("touched %v while the reconciler is not running", got)
	}
	e.r.active.Store(true) // as Run does
	for _, tc := range []struct {
		name  string
		event func()
		want  bool
	}{
		{"add", func() { h.OnAdd(base, false) }, true},
		{"delete", func() { h.OnDelete(base) }, true},
		{"delete tombstone", func() { h.OnDelete(cache.DeletedFinalStateUnknown{Key: "demo/web", Obj: base}) }, true},
		{"labels only", func() { h.OnUpdate(base, relabelled) }, false},
		{"same object (relist)", func() { h.OnUpdate(base, base.DeepCopy()) }, false},
		{"secondary added", func() { h.OnUpdate(base, svc("u1", corev1.ServiceTypeClusterIP, "10.96.0.2", "fd00:10:96::2")) }, true},
		{"type changed", func() { h.OnUpdate(base, svc("u1", corev1.ServiceTypeExternalName)) }, true},
		{"re-created (new UID)", func() { h.OnUpdate(base, svc("u2", corev1.ServiceTypeClusterIP, "10.96.0.2")) }, true},
	} {
		tc.event()
		got := e.r.takeDirty()
		if touched := len(got) == 1 && got[0] == "demo/web"; touched != tc.want {
			t.Errorf("%s: touched %v, want %v", tc.name, got, tc.want)
		}
	}
}

// gatedAllocator holds every Confirm until `want` of them are in flight at
// once (or a second passes), and records the most seen together.
type gatedAllocator struct {
	Allocator
	want     int
	mu       sync.Mutex
	inflight int
	most     int
	all      chan struct{}
	once     sync.Once
}

func (g *gatedAllocator) Confirm(ctx context.Context, ip netip.Addr, owner alloc.Owner) (alloc.Reservation, error) {
	g.mu.Lock()
	g.inflight++
	g.most = max(g.most, g.inflight)
	if g.inflight == g.want {
		g.once.Do(func() { close(g.all) })
	}
	g.mu.Unlock()
	select {
	case <-g.all:
	case <-time.After(time.Second):
	}
	defer func() { g.mu.Lock(); g.inflight--; g.mu.Unlock() }()
	return g.Allocator.Confirm(ctx, ip, owner)
}

// TestImportsRunConcurrently: a rebuild confirms Workers addresses at once
// (one at a time, each a write plus a watch round trip, rebuilt about 150
// reservations a second against a real apiserver), and still records each
// exactly once.
func TestImportsRunConcurrently(t *testing.T) {
	e := newEnv(t, []string{"10.96.0.0/16"})
	const workers = 4
	g := &gatedAllocator{Allocator: e.alloc, want: workers, all: make(chan struct{})}
	r, err := New(Options{Allocator: g, Store: e.store, Services: NewSlimServiceLister(e.services, false), Clock: e.clock, Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for i := range 12 {
		ip := fmt.Sprintf("10.96.0.%d", 10+i)
		ips = append(ips, ip)
		e.live("demo", fmt.Sprintf("s%d", i), fmt.Sprintf("uid-%d", i), ip)
	}
	if _, err := r.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	if g.most != workers {
		t.Errorf("at most %d confirms in flight, want %d", g.most, workers)
	}
	for i, ip := range ips {
		e.wantState(ip, alloc.StateBound, fmt.Sprintf("demo/s%d", i))
	}
}

// TestBacklogCountsWhatASyncRepaired: the backlog gauge is what the last
// sync had to do (so the soak suite can tell a caught-up reconciler from a
// lagging one) and drops to 0 on the next quiet sync; syncs are counted.
func TestBacklogCountsWhatASyncRepaired(t *testing.T) {
	for _, name := range []string{"IPv4", "IPv6", "IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, clusters[name])
			gauge := func() float64 {
				var m dto.Metric
				if err := e.metrics.Backlog.Write(&m); err != nil {
					t.Fatal(err)
				}
				return m.GetGauge().GetValue()
			}
			step := func(what string, wantBacklog float64, wantSyncs float64) {
				t.Helper()
				e.sync()
				if got := gauge(); got != wantBacklog {
					t.Errorf("%s: backlog %v, want %v", what, got, wantBacklog)
				}
				if got := counterValue(e.metrics.Syncs); got != wantSyncs {
					t.Errorf("%s: syncs %v, want %v", what, got, wantSyncs)
				}
			}
			n := float64(len(e.fams))
			web := e.admit(alloc.Owner{Namespace: "demo", Name: "web"}, e.fams...)
			e.live("demo", "web", "uid-1", web...)
			step("pins confirmed", n, 1)
			step("nothing left", 0, 2)
			e.live("demo", "other", "uid-2", band[e.fams[0]][2]) // pinned while the webhook was away
			step("import", 1, 3)
			e.remove("demo", "web")
			step("release to sticky", n, 4)
			step("quiet again", 0, 5)
			e.admit(alloc.Owner{Namespace: "demo", Name: "never"}, e.fams[0])
			step("pending within its grace", 0, 6)
			e.clock.Step(grace + time.Second)
			step("pending collected", 1, 7)
			e.synced = false
			if _, err := e.r.Sync(e.ctx); err == nil {
				t.Fatal("Sync ran on unsynced caches")
			}
			if got := counterValue(e.metrics.Syncs); got != 7 {
				t.Errorf("a refused sync counted: syncs %v", got)
			}
		})
	}
}
