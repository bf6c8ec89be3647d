package reconcile

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func svc(ns, name, uid string, ips ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: ips}}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	return s
}

// wantHeld checks the holder of every address in want ("" = free) and that
// nothing else is held.
func wantHeld(t *testing.T, m *ServiceIPs, want map[string]string) {
	t.Helper()
	n := 0
	for ip, key := range want {
		got, ok := m.Holder(netip.MustParseAddr(ip))
		if got != key || ok != (key != "") {
			t.Errorf("Holder(%s) = %q, %v; want %q", ip, got, ok, key)
		}
		if key != "" {
			n++
		}
	}
	if m.Len() != n {
		t.Errorf("%d addresses held, want %d", m.Len(), n)
	}
}

// TestServiceIPsFollowEvents: the map follows add, update and delete
// events for every family layout: an address that moves is released,
// a tombstone deletes, a Service deleted and re-created holds its new
// addresses only.
func TestServiceIPsFollowEvents(t *testing.T) {
	for _, tc := range []struct {
		name       string
		first, now []string // the Service's clusterIPs before and after an update
		other      string   // an address outside both
	}{
		{"IPv4", []string{"10.96.0.10"}, []string{"10.96.0.11"}, "10.96.0.12"},
		{"IPv6", []string{"fd00:10:96::10"}, []string{"fd00:10:96::11"}, "fd00:10:96::12"},
		{"IPv4,IPv6", []string{"10.96.0.10", "fd00:10:96::10"}, []string{"10.96.0.10", "fd00:10:96::11"}, "fd00:10:96::12"},
		{"IPv6,IPv4", []string{"fd00:10:96::10", "10.96.0.10"}, []string{"fd00:10:96::11", "10.96.0.10"}, "10.96.0.12"},
		{"IPv4 to dual-stack", []string{"10.96.0.10"}, []string{"10.96.0.10", "fd00:10:96::11"}, "fd00:10:96::12"},
		{"dual-stack to IPv6", []string{"10.96.0.10", "fd00:10:96::10"}, []string{"fd00:10:96::10"}, "10.96.0.12"},
	} {
		for form, wrap := range forms {
			t.Run(tc.name+"/"+form, func(t *testing.T) {
				testServiceIPsFollowEvents(t, tc.first, tc.now, tc.other, wrap)
			})
		}
	}
}

// forms are the shapes a Service reaches the handler in: the informer's
// transform makes it a SlimService; tests and other caches give Services.
var forms = map[string]func(*corev1.Service) any{
	"Service":     func(s *corev1.Service) any { return s },
	"SlimService": func(s *corev1.Service) any { return NewSlimService(s) },
}

func testServiceIPsFollowEvents(t *testing.T, first, now []string, other string, wrap func(*corev1.Service) any) {
	m := NewServiceIPs()
	h := m.Handler()
	state := func(holds []string, key string) map[string]string {
		want := map[string]string{other: ""}
		for _, ip := range append(append([]string(nil), first...), now...) {
			want[ip] = ""
		}
		for _, ip := range holds {
			want[ip] = key
		}
		return want
	}
	a := wrap(svc("demo", "web", "u1", first...))
	h.OnAdd(a, true)
	wantHeld(t, m, state(first, "demo/web"))

	// The address moves: the old one is free, the new one held.
	b := wrap(svc("demo", "web", "u1", now...))
	h.OnUpdate(a, b)
	wantHeld(t, m, state(now, "demo/web"))

	// Deleted through a relist's tombstone.
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "demo/web", Obj: b})
	wantHeld(t, m, state(nil, ""))

	// Re-created under the same name with the first addresses.
	h.OnAdd(wrap(svc("demo", "web", "u2", first...)), false)
	wantHeld(t, m, state(first, "demo/web"))
	h.OnDelete(wrap(svc("demo", "web", "u2", first...)))
	wantHeld(t, m, state(nil, ""))

	// A tombstone without its object (client-go's store lost it): the
	// key alone releases every address, and nobody else's.
	h.OnAdd(wrap(svc("demo", "web", "u3", now...)), false)
	h.OnAdd(wrap(svc("demo", "other", "u4", first...)), false)
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "demo/web"})
	wantHeld(t, m, state(first, "demo/other"))
}

// TestServiceIPsHeldAsTheIndexWas: what holds an address is what the
// informer index by clusterIP said: default/kubernetes included,
// ExternalName and headless Services and unparseable addresses not; a
// non-canonical spelling is found by the address.
func TestServiceIPsHeldAsTheIndexWas(t *testing.T) {
	for form, wrap := range forms {
		t.Run(form, func(t *testing.T) { testServiceIPsHeldAsTheIndexWas(t, wrap) })
	}
}

func testServiceIPsHeldAsTheIndexWas(t *testing.T, wrap func(*corev1.Service) any) {
	m := NewServiceIPs()
	h := m.Handler()
	h.OnAdd(wrap(svc("default", "kubernetes", "k", "10.96.0.1", "fd00:10:96::1")), true)
	ext := svc("a", "ext", "e", "10.96.0.9")
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "x.example"
	h.OnAdd(wrap(ext), true)
	h.OnAdd(wrap(svc("a", "headless", "h", "None")), true)
	h.OnAdd(wrap(svc("a", "bad", "b", "10.96.0.300", "fd00:10:96:0:0::5")), true)
	only := svc("a", "old", "o")
	only.Spec.ClusterIP = "10.96.0.6" // clusterIPs empty: clusterIP counts
	h.OnAdd(wrap(only), true)
	h.OnAdd("not a Service", true)
	wantHeld(t, m, map[string]string{
		"10.96.0.1": "default/kubernetes", "fd00:10:96::1": "default/kubernetes",
		"10.96.0.9": "", "fd00:10:96::5": "a/bad", "10.96.0.6": "a/old",
		"::ffff:10.96.0.6": "", // another address than 10.96.0.6
	})

	// A Service turning ExternalName lets go of its address.
	ext2 := svc("a", "old", "o")
	ext2.Spec.Type, ext2.Spec.ExternalName = corev1.ServiceTypeExternalName, "x.example"
	h.OnUpdate(wrap(only), wrap(ext2))
	if _, ok := m.Holder(netip.MustParseAddr("10.96.0.6")); ok {
		t.Error("10.96.0.6 still held after its Service turned ExternalName")
	}
}

// TestServiceIPsTwoClaimants: after a relist the new holder of an address
// can be delivered before the old holder's delete; the address stays held
// until both let go, whatever the order.
func TestServiceIPsTwoClaimants(t *testing.T) {
	for _, order := range []string{"old first", "new first"} {
		t.Run(order, func(t *testing.T) {
			m := NewServiceIPs()
			h := m.Handler()
			old, cur := svc("a", "old", "1", "10.96.0.5"), svc("b", "new", "2", "10.96.0.5", "fd00:10:96::5")
			h.OnAdd(old, true)
			h.OnAdd(cur, false)
			if k, _ := m.Holder(netip.MustParseAddr("10.96.0.5")); k != "a/old" {
				t.Errorf("while both claim it: held by %q, want the first seen", k)
			}
			first, second := any(old), any(cur)
			if order == "new first" {
				first, second = cur, old
			}
			h.OnDelete(cache.DeletedFinalStateUnknown{Key: "x", Obj: first})
			k, ok := m.Holder(netip.MustParseAddr("10.96.0.5"))
			if want := cache.MetaObjectToName(second.(*corev1.Service)).String(); !ok || k != want {
				t.Errorf("after one let go: held by %q, %v; want %q", k, ok, want)
			}
			h.OnDelete(second)
			wantHeld(t, m, map[string]string{"10.96.0.5": "", "fd00:10:96::5": ""})
		})
	}
}

// TestServiceIPsFromInformer: registered on a real informer (fake
// clientset), the map holds the initial list once the registration says
// synced, and follows later changes.
func TestServiceIPsFromInformer(t *testing.T) {
	var objs []*corev1.Service
	for i := range 300 {
		objs = append(objs, svc("demo", "s"+string(rune('a'+i%26))+string(rune('a'+i/26)), "u", netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(1 + i%250)}).String()))
	}
	cs := fake.NewClientset()
	for _, s := range objs {
		if _, err := cs.CoreV1().Services(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Core().V1().Services().Informer()
	m := NewServiceIPs()
	reg, err := inf.AddEventHandler(m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); f.Shutdown() }()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, reg.HasSynced) {
		t.Fatal("not synced")
	}
	if m.Len() != len(objs) {
		t.Fatalf("synced with %d addresses, want %d", m.Len(), len(objs))
	}
	if err := cs.CoreV1().Services("demo").Delete(ctx, objs[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(objs[0].Spec.ClusterIP)
	for i := 0; ; i++ {
		if _, ok := m.Holder(ip); !ok {
			break
		}
		if i == 3000 {
			t.Fatalf("%s still held 30 s after its Service was deleted", ip)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
