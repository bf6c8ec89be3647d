package allocstore

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// TestLifecycleOnConfigMaps drives one Service through pending → bound →
// sticky → re-created → expired on the real apiserver, reading the labels a
// human would see with `kubectl get cm -l dualstack-webhook.io/pool`,
// in every family order. The clock is injected: nothing sleeps.
func TestLifecycleOnConfigMaps(t *testing.T) {
	suite.Need(t)
	pools := compile(t, `
apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: web
pools:
- name: web
  addresses:
    ipv4: ["10.96.0.20-10.96.0.29"]
    ipv6: ["fd00:10:96::20-fd00:10:96::29"]
`)
	orders := map[string][]corev1.IPFamily{
		"IPv4":      {corev1.IPv4Protocol},
		"IPv6":      {corev1.IPv6Protocol},
		"IPv4,IPv6": {corev1.IPv4Protocol, corev1.IPv6Protocol},
		"IPv6,IPv4": {corev1.IPv6Protocol, corev1.IPv4Protocol},
	}
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			ns := namespace(t, "lifecycle")
			clock := clocktesting.NewFakePassiveClock(time.Now())
			a, err := alloc.New(newStore(t, ns), pools, alloc.Options{Clock: clock, Retention: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			states := func() map[string]string {
				t.Helper()
				list, err := suite.CP.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: configmap.LabelPool + "=web"})
				if err != nil {
					t.Fatal(err)
				}
				out := map[string]string{}
				for _, cm := range list.Items {
					out[cm.Data["ip"]] = cm.Labels[configmap.LabelState] + "/" + cm.Labels[configmap.LabelFamily] + "/" + cm.Data["name"]
				}
				return out
			}
			expect := func(ips []netip.Addr, state, owner string) {
				t.Helper()
				got := states()
				for _, ip := range ips {
					want := state + "/" + string(alloc.FamilyOf(ip)) + "/" + owner
					if got[ip.String()] != want {
						t.Errorf("%s: labels say %q, want %q", ip, got[ip.String()], want)
					}
				}
			}
			web := alloc.Owner{Namespace: "shop", Name: "web", RequestUID: "r1"}
			res, err := a.Reserve(ctx, alloc.Request{Owner: web, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			expect(res.IPs, "pending", "web")
			for _, ip := range res.IPs {
				if _, err := a.Confirm(ctx, ip, alloc.Owner{Namespace: "shop", Name: "web", UID: "u1"}); err != nil {
					t.Fatal(err)
				}
			}
			expect(res.IPs, "bound", "web")
			for _, ip := range res.IPs {
				if err := a.Release(ctx, ip, alloc.Owner{Namespace: "shop", Name: "web", UID: "u1"}); err != nil {
					t.Fatal(err)
				}
			}
			expect(res.IPs, "sticky", "web")
			var held *alloc.ErrHeld
			if _, err := a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "shop", Name: "thief"}, Requested: res.IPs[:1]}); !errors.As(err, &held) || held.Owner != "shop/web" {
				t.Errorf("requesting a sticky address of another Service: %v, want held by shop/web", err)
			}
			again, err := a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "shop", Name: "web", RequestUID: "r2"}, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			for i := range again.IPs {
				if again.IPs[i] != res.IPs[i] {
					t.Errorf("re-created Service got %s, want its sticky %s", again.IPs[i], res.IPs[i])
				}
			}
			expect(res.IPs, "pending", "web")
			for _, ip := range res.IPs {
				_ = a.Release(ctx, ip, alloc.Owner{Namespace: "shop", Name: "web"})
			}
			clock.SetTime(clock.Now().Add(2 * time.Hour))
			freed, err := a.Collect(ctx)
			if err != nil || len(freed) != len(res.IPs) {
				t.Fatalf("Collect after retention freed %d (%v), want %d", len(freed), err, len(res.IPs))
			}
			if got := states(); len(got) != 0 {
				t.Errorf("ConfigMaps left after expiry: %v", got)
			}
		})
	}
}
