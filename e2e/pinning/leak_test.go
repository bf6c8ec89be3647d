package pinning

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestLeakedIPAddressNotPinned: an IPAddress object whose Service is gone
// (kube-apiserver v1.37.2's repair controller leaves such leaks for about a
// minute when a Service whose secondary it is re-creating is deleted — seen
// in the services suite's update differential: every upgrade of a re-created
// "grid" got "failed to allocate IP fd00:10:96::4: provided IP is already
// allocated") makes the apiserver refuse that address. The webhook must not
// pin it, neither to a new Service of the same name (CREATE or single → dual
// UPDATE) nor to another Service: the apiserver alone would have admitted all
// three requests with an address of its own.
func TestLeakedIPAddressNotPinned(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "leak")
	leak := lowestFree(ctx, t, c, pinState, v6)
	ipa := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: leak.String()},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{
			Group: "", Resource: "services", Namespace: ns, Name: "grid",
		}},
	}
	if _, err := c.NetworkingV1().IPAddresses().Create(ctx, ipa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the leaked IPAddress %s: %v", leak, err)
	}
	t.Cleanup(func() {
		_ = c.NetworkingV1().IPAddresses().Delete(context.Background(), leak.String(), metav1.DeleteOptions{})
	})
	time.Sleep(time.Second) // the webhook's IPAddress informer

	notLeak := func(what string, sv *corev1.Service, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v (the apiserver alone admits it)", what, err)
			return
		}
		for _, a := range addrs(t, sv) {
			if a == leak {
				t.Errorf("%s got the leaked %s", what, leak)
			}
		}
	}
	svcs := c.CoreV1().Services(ns)
	grid, err := svcs.Create(ctx, newService("grid", framework.WithPolicy(corev1.IPFamilyPolicySingleStack)), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	grid.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyRequireDualStack)
	up, err := svcs.Update(ctx, grid, metav1.UpdateOptions{})
	notLeak("single → dual upgrade of "+ns+"/grid (the name the leak names)", up, err)
	dual, err := svcs.Create(ctx, newService("dual", framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(v6, v4)), metav1.CreateOptions{})
	notLeak("create of another dual-stack Service", dual, err)
	if err := svcs.Delete(ctx, "grid", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again, err := svcs.Create(ctx, newService("grid", framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack)), metav1.CreateOptions{})
	notLeak("re-create of "+ns+"/grid as dual-stack", again, err)
}

// TestLeakedStickyAddressNotRepinned is the services suite's failure
// exactly: "grid" is upgraded (the webhook pins its secondary S) and
// deleted, so S is sticky to the name; the apiserver's repair controller,
// working from a stale cache, re-creates S's IPAddress for the deleted
// Service (simulated here by creating that object). Until the controller
// notices the leak (about a minute), the apiserver refuses S. A re-created
// "grid" upgraded again must not be handed S back: the apiserver alone would
// have admitted the upgrade.
func TestLeakedStickyAddressNotRepinned(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "leaksticky")
	svcs := c.CoreV1().Services(ns)
	upgrade := func() (*corev1.Service, error) {
		t.Helper()
		sv, err := svcs.Create(ctx, newService("grid", framework.WithPolicy(corev1.IPFamilyPolicySingleStack)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sv.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyRequireDualStack)
		return svcs.Update(ctx, sv, metav1.UpdateOptions{})
	}
	first, err := upgrade()
	if err != nil {
		t.Fatal(err)
	}
	s := addrs(t, first)[1]
	waitBound(t, c, pinState, s, ns, "grid")
	if err := svcs.Delete(ctx, "grid", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("%s sticky to %s/grid", s, ns), func(ctx context.Context) (bool, string) {
		r, ok := reservationOf(ctx, t, c, pinState, s)
		return ok && r.State == "sticky", r.String()
	})
	ipa := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: s.String()},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{
			Group: "", Resource: "services", Namespace: ns, Name: "grid",
		}},
	}
	if _, err := c.NetworkingV1().IPAddresses().Create(ctx, ipa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the leaked IPAddress %s: %v", s, err)
	}
	t.Cleanup(func() {
		_ = c.NetworkingV1().IPAddresses().Delete(context.Background(), s.String(), metav1.DeleteOptions{})
	})
	time.Sleep(time.Second) // the webhook's IPAddress informer
	again, err := upgrade()
	if err != nil {
		t.Fatalf("upgrade of the re-created grid while %s's IPAddress is leaked: %v (the apiserver alone admits it)", s, err)
	}
	if got := addrs(t, again); got[1] == s {
		t.Errorf("the re-created grid got the leaked %s", s)
	}
}
