package configmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

const testNS = "dualstack-webhook"

var cmGR = schema.GroupResource{Resource: "configmaps"}

func TestName(t *testing.T) {
	tests := map[string]struct {
		ip   string
		want string
	}{
		"IPv4 dots become dashes":                  {"10.96.0.12", "ip-10-96-0-12"},
		"IPv6 colons become dashes":                {"fd00:10:96::1", "ip-fd00-10-96--1"},
		"IPv6 canonical text is lower-case":        {"FD00:10:96::ABC", "ip-fd00-10-96--abc"},
		"IPv6 ending in :: gets a trailing 0":      {"fd00:10:96:0:1::", "ip-fd00-10-96-0-1--0"},
		"IPv6 all-zero run in the middle":          {"fd00:0:0:0:0:0:0:1", "ip-fd00--1"},
		"IPv4-mapped IPv6 is named as the IPv4 it": {"::ffff:10.96.0.12", "ip-10-96-0-12"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Name(netip.MustParseAddr(tc.ip))
			if got != tc.want {
				t.Errorf("Name(%s) = %q, want %q", tc.ip, got, tc.want)
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("Name(%s) = %q is not a valid ConfigMap name: %v", tc.ip, got, errs)
			}
		})
	}
}

// TestNameInjective: distinct addresses never share a ConfigMap, in either
// family, including the awkward ends of the IPv6 space.
func TestNameInjective(t *testing.T) {
	seen := map[string]netip.Addr{}
	add := func(a netip.Addr) {
		n := Name(a)
		if prev, ok := seen[n]; ok && prev != a {
			t.Fatalf("Name(%s) == Name(%s) == %q", a, prev, n)
		}
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Fatalf("Name(%s) = %q invalid: %v", a, n, errs)
		}
		seen[n] = a
	}
	for _, base := range []string{"10.96.0.0", "fd00:10:96::", "fd00:10:96:0:1::", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00"} {
		a := netip.MustParseAddr(base)
		for range 300 {
			add(a)
			a = a.Next()
			if !a.IsValid() {
				break
			}
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	now := time.Date(2026, 11, 23, 11, 0, 0, 5, time.UTC)
	for name, r := range map[string]alloc.Reservation{
		"IPv4 bound":               {IP: netip.MustParseAddr("10.96.0.12"), Pool: "web", Owner: alloc.Owner{Namespace: "a", Name: "b", UID: "u"}, State: alloc.StateBound, Created: now, Updated: now, Version: "7"},
		"IPv6 pending generate":    {IP: netip.MustParseAddr("fd00:10:96::c"), Pool: "web", Owner: alloc.Owner{Namespace: "a", GenerateName: "job-", RequestUID: "r"}, State: alloc.StatePending, Created: now, Updated: now, Expires: now.Add(time.Minute), Version: "8"},
		"IPv4 sticky outside pool": {IP: netip.MustParseAddr("10.96.7.7"), Owner: alloc.Owner{Namespace: "a", Name: "b"}, State: alloc.StateSticky, Created: now, Updated: now, Expires: now.Add(time.Hour), Version: "9"},
	} {
		t.Run(name, func(t *testing.T) {
			cm := encode(testNS, r)
			if cm.Labels[LabelFamily] != string(r.Family()) || cm.Labels[LabelState] != string(r.State) || cm.Labels[LabelPool] != r.Pool {
				t.Errorf("labels = %v", cm.Labels)
			}
			got, err := decode(cm)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(r, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
	bad := encode(testNS, alloc.Reservation{IP: netip.MustParseAddr("10.96.0.1"), State: alloc.StateBound})
	bad.Name = Name(netip.MustParseAddr("10.96.0.2"))
	if _, err := decode(bad); err == nil {
		t.Error("decode accepted a ConfigMap whose name does not match its IP")
	}
}

// fakeAPI is a fake clientset that stamps resourceVersions (the fake
// tracker does not) so that the store's compare-and-swap paths run. It is
// used only to inject AlreadyExists and Conflict; the real contract runs
// against a real kube-apiserver in e2e/allocstore.
func fakeAPI(t *testing.T) *fake.Clientset {
	cs := fake.NewClientset()
	var rv atomic.Int64
	rv.Store(100)
	cs.PrependReactor("*", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := a.(interface{ GetObject() runtime.Object }); ok {
			if cm, ok := o.GetObject().(*corev1.ConfigMap); ok {
				cm.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
			}
		}
		return false, nil, nil
	})
	return cs
}

// inject makes the next n verb calls fail with err.
func inject(cs *fake.Clientset, verb string, n int32, err error) *atomic.Int32 {
	var hits atomic.Int32
	cs.PrependReactor(verb, "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if hits.Add(1) <= n {
			return true, nil, err
		}
		return false, nil, nil
	})
	return &hits
}

func startStore(t *testing.T, cs *fake.Clientset) *Store {
	t.Helper()
	// Injected AlreadyExists name objects that never appear: keep the hint
	// wait short so those tests do not idle.
	s, err := New(cs, Options{Namespace: testNS, WaitTimeout: 5 * time.Second, HintWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.Shutdown() })
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInjectedErrorsMapToSentinels(t *testing.T) {
	r := alloc.Reservation{IP: netip.MustParseAddr("10.96.0.12"), Pool: "p", Owner: alloc.Owner{Namespace: "a", Name: "b"}, State: alloc.StatePending}
	tests := map[string]struct {
		verb string
		err  error
		call func(*Store, alloc.Reservation) error
		want error
	}{
		"create AlreadyExists is ErrExists": {"create", apierrors.NewAlreadyExists(cmGR, "x"),
			func(s *Store, r alloc.Reservation) error { _, err := s.Create(context.Background(), r); return err }, alloc.ErrExists},
		"update Conflict is ErrConflict": {"update", apierrors.NewConflict(cmGR, "x", errors.New("rv")),
			func(s *Store, r alloc.Reservation) error { _, err := s.Update(context.Background(), r); return err }, alloc.ErrConflict},
		"update NotFound is ErrNotFound": {"update", apierrors.NewNotFound(cmGR, "x"),
			func(s *Store, r alloc.Reservation) error { _, err := s.Update(context.Background(), r); return err }, alloc.ErrNotFound},
		"delete Conflict is ErrConflict": {"delete", apierrors.NewConflict(cmGR, "x", errors.New("rv")),
			func(s *Store, r alloc.Reservation) error { return s.Delete(context.Background(), r) }, alloc.ErrConflict},
		"delete NotFound is ErrNotFound": {"delete", apierrors.NewNotFound(cmGR, "x"),
			func(s *Store, r alloc.Reservation) error { return s.Delete(context.Background(), r) }, alloc.ErrNotFound},
	}
	for _, fam := range []string{"10.96.0.12", "fd00:10:96::c"} {
		for name, tc := range tests {
			t.Run(fam+"/"+name, func(t *testing.T) {
				cs := fakeAPI(t)
				s := startStore(t, cs)
				r := r
				r.IP = netip.MustParseAddr(fam)
				if tc.verb != "create" {
					var err error
					if r, err = s.Create(context.Background(), r); err != nil {
						t.Fatal(err)
					}
				}
				hits := inject(cs, tc.verb, 1, tc.err)
				if err := tc.call(s, r); !errors.Is(err, tc.want) {
					t.Errorf("got %v, want %v", err, tc.want)
				}
				if hits.Load() != 1 {
					t.Errorf("injected reactor hit %d times, want 1", hits.Load())
				}
			})
		}
	}
}

func TestVersionlessWrites(t *testing.T) {
	for _, addr := range []string{"10.96.0.12", "fd00:10:96::c"} {
		t.Run(addr, func(t *testing.T) {
			s := startStore(t, fakeAPI(t))
			r := alloc.Reservation{IP: netip.MustParseAddr(addr), Owner: alloc.Owner{Namespace: "a", Name: "b"}, State: alloc.StatePending}
			if _, err := s.Update(context.Background(), r); !errors.Is(err, alloc.ErrNotFound) {
				t.Errorf("versionless Update of absent = %v, want ErrNotFound", err)
			}
			if err := s.Delete(context.Background(), r); !errors.Is(err, alloc.ErrNotFound) {
				t.Errorf("versionless Delete of absent = %v, want ErrNotFound", err)
			}
			if _, err := s.Create(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			// Present: an unconditional write is refused, never sent.
			if _, err := s.Update(context.Background(), r); !errors.Is(err, alloc.ErrConflict) {
				t.Errorf("versionless Update = %v, want ErrConflict", err)
			}
			if err := s.Delete(context.Background(), r); !errors.Is(err, alloc.ErrConflict) {
				t.Errorf("versionless Delete = %v, want ErrConflict", err)
			}
		})
	}
}

func compile(t *testing.T, doc string) *alloc.Pools {
	t.Helper()
	c, err := alloc.ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, err := alloc.Compile(c, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAllocatorRetriesPastInjectedErrors: AlreadyExists on the first
// candidate moves the allocator to the next address; a Conflict during
// release makes it re-read and succeed. Both families, both orders.
func TestAllocatorRetriesPastInjectedErrors(t *testing.T) {
	pools := compile(t, `
apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: p
pools:
- name: p
  addresses:
    ipv4: ["10.96.0.10-10.96.0.20"]
    ipv6: ["fd00:10:96::10-fd00:10:96::20"]
`)
	for name, fams := range map[string][]corev1.IPFamily{
		"IPv4":      {corev1.IPv4Protocol},
		"IPv6":      {corev1.IPv6Protocol},
		"IPv4,IPv6": {corev1.IPv4Protocol, corev1.IPv6Protocol},
		"IPv6,IPv4": {corev1.IPv6Protocol, corev1.IPv4Protocol},
	} {
		t.Run(name, func(t *testing.T) {
			cs := fakeAPI(t)
			s := startStore(t, cs)
			// Spread 1: the next candidate after a lost race is the next
			// lowest (by default a replica that loses spreads its picks).
			a, err := alloc.New(s, pools, alloc.Options{Spread: 1})
			if err != nil {
				t.Fatal(err)
			}
			// The first create of each family loses to an invisible writer.
			var mu sync.Mutex
			lost := map[string]bool{}
			cs.PrependReactor("create", "configmaps", func(act k8stesting.Action) (bool, runtime.Object, error) {
				mu.Lock()
				defer mu.Unlock()
				cm := act.(k8stesting.CreateAction).GetObject().(*corev1.ConfigMap)
				fam := cm.Labels[LabelFamily]
				if !lost[fam] {
					lost[fam], lost[cm.Data["ip"]] = true, true
					return true, nil, apierrors.NewAlreadyExists(cmGR, cm.Name)
				}
				return false, nil, nil
			})
			owner := alloc.Owner{Namespace: "ns", Name: "web", RequestUID: "r1"}
			res, err := a.Reserve(context.Background(), alloc.Request{Owner: owner, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			for i, ip := range res.IPs {
				lowest := pools.Default.Addresses.Ranges(fams[i])[0].From
				if ip != lowest.Next() {
					t.Errorf("%s: got %s, want %s (the lowest lost to AlreadyExists)", fams[i], ip, lowest.Next())
				}
				if !lost[lowest.String()] {
					t.Errorf("%s: the lowest address %s was never tried", fams[i], lowest)
				}
				if _, err := a.Confirm(context.Background(), ip, alloc.Owner{Namespace: "ns", Name: "web", UID: "u1"}); err != nil {
					t.Fatal(err)
				}
				conflicts := inject(cs, "update", 1, apierrors.NewConflict(cmGR, "x", errors.New("rv")))
				if err := a.Release(context.Background(), ip, alloc.Owner{Namespace: "ns", Name: "web", UID: "u1"}); err != nil {
					t.Fatalf("Release after one Conflict: %v", err)
				}
				if conflicts.Load() < 2 {
					t.Errorf("Release made %d update calls, want a retry after the Conflict", conflicts.Load())
				}
				got, _, _ := s.Get(context.Background(), ip)
				if got.State != alloc.StateSticky {
					t.Errorf("state after Release = %s, want sticky", got.State)
				}
			}
		})
	}
}

// TestOnDeleteFiresForDeletionsByAnyone: the reconciler's hook sees a
// reservation ConfigMap deleted behind the store's back (an operator
// wiping the state), and the store's view follows.
func TestOnDeleteFiresForDeletionsByAnyone(t *testing.T) {
	cs := fakeAPI(t)
	deleted := make(chan struct{}, 10)
	s, err := New(cs, Options{Namespace: testNS, WaitTimeout: 5 * time.Second, OnDelete: func() { deleted <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.Shutdown() })
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.96.0.7")
	if _, err := s.Create(ctx, alloc.Reservation{IP: ip, Pool: "p", State: alloc.StateBound, Owner: alloc.Owner{Namespace: "demo", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps(testNS).Delete(ctx, Name(ip), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-deleted:
	case <-time.After(30 * time.Second): // a bound on a hang, not a timing assertion
		t.Fatal("OnDelete never called")
	}
	if _, ok, err := s.Get(ctx, ip); err != nil || ok {
		t.Errorf("after OnDelete, Get = %v, %v; want gone", ok, err)
	}
}

// A delete of an older incarnation must not settle the wait for our
// re-create: delete(rv 1) then create(rv 3), with the watch still to
// deliver DELETED(rv 2) and ADDED(rv 3). Found as a flake of the contract
// suite on the real apiserver (Get after re-create saw nothing).
func TestStaleDeleteDoesNotSettleRecreate(t *testing.T) {
	s := startStore(t, fakeAPI(t))
	ip := netip.MustParseAddr("fd00:10:96::a:0")
	cm := func(rv string) *corev1.ConfigMap {
		c := encode(testNS, alloc.Reservation{IP: ip, Pool: "p", State: alloc.StateBound,
			Owner: alloc.Owner{Namespace: "n", Name: "s"}})
		c.ResourceVersion = rv
		return c
	}
	s.observe(cm("1"), false)
	s.expectWrite(ip, "1", true, "")  // our delete of rv 1
	s.expectWrite(ip, "3", false, "") // our re-create answered rv 3
	s.observe(cm("2"), true)          // DELETED of the old incarnation, at rv 2

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, ok, err := s.Get(ctx, ip); err == nil {
		t.Fatalf("Get answered (ok=%v) before the cache showed the re-create", ok)
	}
	s.observe(cm("3"), false)
	r, ok, err := s.Get(context.Background(), ip)
	if err != nil || !ok || r.Version != "3" {
		t.Fatalf("Get after the re-create arrived = %+v %v %v, want version 3", r, ok, err)
	}

	// Someone else deleting our object after our write does settle it.
	s.expectWrite(ip, "5", false, "")
	s.observe(cm("6"), true)
	if _, ok, err := s.Get(context.Background(), ip); err != nil || ok {
		t.Fatalf("Get after a later foreign delete = ok %v err %v, want absent", ok, err)
	}
}

// A read waits only for our writes that can change its answer: one
// request's reads are not held up by the watch delivering the writes of the
// other requests in flight. TakenNow never waits (the allocator keeps its
// recent writes aside itself).
func TestReadsWaitOnlyForTheirWrites(t *testing.T) {
	s := startStore(t, fakeAPI(t))
	mine := netip.MustParseAddr("10.96.0.7")
	other := netip.MustParseAddr("10.96.0.8")
	moved := netip.MustParseAddr("10.96.0.9")
	a := alloc.Owner{Namespace: "n", Name: "a"}
	b := alloc.Owner{Namespace: "n", Name: "b"}
	cm := func(ip netip.Addr, o alloc.Owner, rv string) *corev1.ConfigMap {
		c := encode(testNS, alloc.Reservation{IP: ip, Pool: "p", State: alloc.StatePending, Owner: o})
		c.ResourceVersion = rv
		return c
	}
	// Address moved is b's in the cache; our update gives it to a.
	s.observe(cm(moved, b, "1"), false)
	s.expectWrite(mine, "2", false, a.Key())  // our create of mine for a
	s.expectWrite(moved, "3", false, a.Key()) // our update of moved: b → a

	blocked := func(what string, read func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := read(ctx); err == nil {
			t.Errorf("%s answered before the cache showed our write", what)
		}
	}
	free := func(what string, read func(ctx context.Context) error) {
		t.Helper()
		if err := read(context.Background()); err != nil {
			t.Errorf("%s waited for writes it does not depend on: %v", what, err)
		}
	}
	byOwner := func(o alloc.Owner) func(context.Context) error {
		return func(ctx context.Context) error { _, err := s.ByOwner(ctx, o.Key()); return err }
	}
	get := func(ip netip.Addr) func(context.Context) error {
		return func(ctx context.Context) error { _, _, err := s.Get(ctx, ip); return err }
	}
	blocked("ByOwner(a)", byOwner(a))
	blocked("ByOwner(b), whose address our update takes", byOwner(b))
	blocked("Get(mine)", get(mine))
	blocked("Taken", func(ctx context.Context) error { return s.Taken(ctx, func(*alloc.IPSet) {}) })
	blocked("List", func(ctx context.Context) error { _, err := s.List(ctx); return err })
	free("ByOwner(c)", byOwner(alloc.Owner{Namespace: "n", Name: "c"}))
	free("Get(other)", get(other))
	free("TakenNow", func(context.Context) error { return s.TakenNow(func(*alloc.IPSet) {}) })

	s.observe(cm(mine, a, "2"), false)
	s.observe(cm(moved, a, "3"), false)
	free("ByOwner(a) once delivered", byOwner(a))
	free("ByOwner(b) once delivered", byOwner(b))
	free("List once delivered", func(ctx context.Context) error { _, err := s.List(ctx); return err })
	if rs, _ := s.ByOwner(context.Background(), a.Key()); len(rs) != 2 {
		t.Errorf("ByOwner(a) = %v, want mine and moved", rs)
	}
}

// TestCacheKeepsCompactRecords: the informer caches the decoded
// reservation and the object's identity, not the ConfigMap (its data map
// and labels would double the memory per reservation beside the index);
// a malformed ConfigMap is still ignored, and a deletion still reaches the
// index.
func TestCacheKeepsCompactRecords(t *testing.T) {
	cs := fakeAPI(t)
	ctx := context.Background()
	bad := encode(testNS, alloc.Reservation{IP: netip.MustParseAddr("10.96.0.9"), Pool: "p", State: alloc.StateBound})
	bad.Data[keyIP] = "not-an-ip"
	if _, err := cs.CoreV1().ConfigMaps(testNS).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Not a reservation (the pools ConfigMap has no family label): the
	// informer does not even list it.
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dualstack-webhook-pools", Namespace: testNS,
		Labels: map[string]string{LabelManagedBy: ManagedBy}}}
	if _, err := cs.CoreV1().ConfigMaps(testNS).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := startStore(t, cs)
	// Nothing reads the cache by namespace, and with every reservation in
	// one namespace that index would be one set of every key.
	if ix := s.informer.GetIndexer().GetIndexers(); len(ix) != 0 {
		t.Errorf("informer indexes %v, want none", ix)
	}
	r := alloc.Reservation{IP: netip.MustParseAddr("fd00:10:96::7"), Pool: "p", Owner: alloc.Owner{Namespace: "a", Name: "b"}, State: alloc.StatePending}
	saved, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(ctx, r.IP)
	if err != nil || !ok || got.Owner != r.Owner || got.Version != saved.Version {
		t.Fatalf("Get = %+v, %v, %v; want the created reservation", got, ok, err)
	}
	items := s.informer.GetStore().List()
	if len(items) != 2 {
		t.Fatalf("informer cache holds %d objects, want 2", len(items))
	}
	var bads int
	for _, it := range items {
		if m, ok := it.(*malformed); ok {
			bads++
			if m.name != bad.Name || m.namespace != testNS || m.rv == "" || m.err == nil {
				t.Errorf("malformed record %+v lacks its name, namespace, version or error", m)
			}
			continue
		}
		c, ok := it.(*cached)
		if !ok {
			t.Fatalf("informer cache holds a %T, want *cached", it)
		}
		if c.namespace != testNS || c.r.Version == "" {
			t.Errorf("cached record %+v lacks its namespace or version", c)
		}
		if m := c.GetObjectMeta(); m.GetName() != Name(r.IP) || m.GetNamespace() != testNS || m.GetResourceVersion() != saved.Version {
			t.Errorf("cached %s: the informer reads key %s/%s, version %s", r.IP, m.GetNamespace(), m.GetName(), m.GetResourceVersion())
		}
		// The index shares the record the informer caches: one copy.
		s.mu.Lock()
		shared := s.idx.Shares(&c.r)
		s.mu.Unlock()
		if !shared {
			t.Errorf("cached %s: the index keeps a copy of the reservation, not the cached record", r.IP)
		}
	}
	if bads != 1 {
		t.Errorf("%d malformed records cached, want 1", bads)
	}
	// Strings every record repeats are shared, not the decoder's copies
	// (which every string of a decoded object is).
	for _, pool := range []string{"p1", "p2"} {
		var first *cached
		for i := range 3 {
			cm := encode(strings.Clone(testNS), alloc.Reservation{IP: netip.AddrFrom4([4]byte{10, 96, 1, byte(i)}), Pool: strings.Clone(pool),
				Owner: alloc.Owner{Namespace: strings.Clone("demo"), Name: fmt.Sprint("svc-", i)}, State: alloc.StateBound})
			cm.ResourceVersion = "1"
			for k, v := range cm.Data {
				cm.Data[k] = strings.Clone(v)
			}
			obj, _ := s.compact(cm)
			c := obj.(*cached)
			if c.r.Pool != pool || c.r.Owner.Namespace != "demo" || c.r.State != alloc.StateBound || c.namespace != testNS {
				t.Fatalf("compact(%s) = %+v", cm.Name, c)
			}
			if unsafe.StringData(c.namespace) != unsafe.StringData(s.ns) || unsafe.StringData(string(c.r.State)) != unsafe.StringData(string(alloc.StateBound)) {
				t.Errorf("compact(%s): namespace or state is a copy of its own", cm.Name)
			}
			if first == nil {
				first = c
			} else if unsafe.StringData(c.r.Pool) != unsafe.StringData(first.r.Pool) || unsafe.StringData(c.r.Owner.Namespace) != unsafe.StringData(first.r.Owner.Namespace) {
				t.Errorf("compact(%s): pool or owner namespace not shared with the first record's", cm.Name)
			}
		}
	}
	// What a record costs (it was 504 bytes with an embedded ObjectMeta
	// and TypeMeta, in a 512-byte size class, then 288 with its name and
	// version beside the reservation).
	if n := unsafe.Sizeof(cached{}); n > 240 {
		t.Errorf("a cached record is %d bytes, want at most 240", n)
	}
	if rs, _ := s.List(ctx); len(rs) != 1 {
		t.Errorf("List = %v, want only the well-formed reservation", rs)
	}
	if err := s.Delete(ctx, saved); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Get(ctx, r.IP); ok || err != nil {
		t.Errorf("after Delete: Get = %v, %v; want gone", ok, err)
	}
}
