package pinning

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestPinsDuringShutdownDelay: after SIGTERM the webhook keeps answering for
// --shutdown-delay (the apiserver may still send it reviews), and a pinning
// review in that window must be answered, not left waiting on a cache that
// the signal already stopped. It used to wait until the apiserver's timeout
// ("allocator state not ready"), which failed Service creates during every
// rolling update (found by make e2e-node).
func TestPinsDuringShutdownDelay(t *testing.T) {
	env := need(t)
	ctx := context.Background()
	const inst, state = "shutdown", "pin-shutdown-state"
	if err := framework.EnsureNamespace(ctx, env.Client, state, nil); err != nil {
		t.Fatal(err)
	}
	w, _, err := env.StartWebhook(ctx, inst, framework.WebhookOptions{
		ServiceCIDRs: framework.DualStackCIDRs,
		Namespace:    state,
		ExtraArgs:    append([]string{"--shutdown-delay", "20s"}, pinFlags...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	ns := scoped(t, env.Client, inst, "shutdown")
	if err := framework.WaitEffective(ctx, env.Client, ns, "", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := w.Terminate(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // into the shutdown delay
	if !w.Running() {
		t.Fatal("the webhook exited before its --shutdown-delay")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	sv, err := env.Client.CoreV1().Services(ns).Create(cctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "during-shutdown"},
		Spec: corev1.ServiceSpec{IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create during the shutdown delay (after %s): %v", time.Since(start).Round(time.Millisecond), err)
	}
	if len(sv.Spec.ClusterIPs) != 2 {
		t.Fatalf("clusterIPs %v, want two", sv.Spec.ClusterIPs)
	}
	// Pinned by the terminating webhook, not left to the apiserver.
	for _, ip := range sv.Spec.ClusterIPs {
		r, ok := reservationOf(ctx, t, env.Client, state, netip.MustParseAddr(ip))
		if !ok || r.Namespace != ns || r.Name != sv.Name {
			t.Errorf("%s: reservation %v (found %v), want one naming %s/%s", ip, r, ok, ns, sv.Name)
		}
	}
}
