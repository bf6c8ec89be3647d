package reconcile

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// TestRunFollowsInformerEvents wires Run the way serve does (a Service
// informer on a fake clientset whose events Touch the reconciler,
// ServiceEvents) and follows one Service through create and delete. The
// interval is an hour, so only the per-Service syncs can drive it (the full
// one runs once at start, before the Service exists).
func TestRunFollowsInformerEvents(t *testing.T) {
	cs := fake.NewClientset()
	f := informers.NewSharedInformerFactory(cs, 0)
	si := f.Core().V1().Services()
	inf := si.Informer()
	ips := NewServiceIPs()
	if _, err := inf.AddEventHandler(ips.Handler()); err != nil {
		t.Fatal(err)
	}
	pools, err := alloc.Compile(nil, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	a, err := alloc.New(st, pools, alloc.Options{External: Holder(ips, nil)})
	if err != nil {
		t.Fatal(err)
	}
	events := record.NewFakeRecorder(10)
	r, err := New(Options{Allocator: a, Store: st, Services: si.Lister(), Synced: inf.HasSynced, Recorder: events, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inf.AddEventHandler(ServiceEvents(r)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; f.Shutdown() })
	f.Start(ctx.Done())
	go func() { defer close(done); r.Run(ctx) }()

	res, err := a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "demo", Name: "web", RequestUID: "r1"}, Families: []corev1.IPFamily{corev1.IPv4Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	ip := res.IPs[0].String()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "u1"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}}}
	if _, err := cs.CoreV1().Services("demo").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The recorder channel blocks until the reconciler has acted.
	if ev := <-events.Events; !strings.Contains(ev, ReasonPinned) || !strings.Contains(ev, ip) {
		t.Fatalf("event %q, want %s for %s", ev, ReasonPinned, ip)
	}
	if got, _, _ := st.Get(ctx, res.IPs[0]); got.State != alloc.StateBound || got.Owner.UID != "u1" {
		t.Fatalf("after the create: %+v, want bound to u1", got)
	}
	if err := cs.CoreV1().Services("demo").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := <-events.Events; !strings.Contains(ev, ReasonReleased) {
		t.Fatalf("event %q, want %s", ev, ReasonReleased)
	}
	if got, _, _ := st.Get(ctx, res.IPs[0]); got.State != alloc.StateSticky || got.Owner.Name != "web" {
		t.Fatalf("after the delete: %+v, want sticky to demo/web", got)
	}
}
