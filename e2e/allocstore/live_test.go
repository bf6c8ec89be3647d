package allocstore

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// TestGetLiveReadsPastTheCache: GetLive (what the allocator confirms a
// "held by another owner" with) answers from the apiserver, not from the
// informer: another replica's create and delete are seen at once, in both
// families, and a ConfigMap that is not a reservation is an error.
func TestGetLiveReadsPastTheCache(t *testing.T) {
	suite.Need(t)
	ns := namespace(t, "live")
	a, b := newStore(t, ns), newStore(t, ns)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	for _, s := range []string{"10.96.0.7", "fd00:10:96::7"} {
		ip := netip.MustParseAddr(s)
		r := alloc.Reservation{IP: ip, Pool: "web", Owner: alloc.Owner{Namespace: "shop", Name: "web"}, State: alloc.StatePending,
			Created: now, Updated: now, Expires: now.Add(time.Minute)}
		saved, err := a.Create(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := b.GetLive(ctx, ip)
		if err != nil || !ok || got.Owner != r.Owner || got.State != alloc.StatePending || got.Version != saved.Version {
			t.Fatalf("%s: GetLive right after another store's create = %+v, %v, %v; want it, version %s", ip, got, ok, err, saved.Version)
		}
		if err := a.Delete(ctx, saved); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := b.GetLive(ctx, ip); err != nil || ok {
			t.Fatalf("%s: GetLive right after another store's delete = %+v, %v, %v; want absent", ip, got, ok, err)
		}
	}
	// A ConfigMap of that name that is not a reservation.
	ip := netip.MustParseAddr("10.96.0.8")
	cm, err := a.Create(ctx, alloc.Reservation{IP: ip, Pool: "web", Owner: alloc.Owner{Namespace: "shop", Name: "x"}, State: alloc.StateBound, Created: now, Updated: now})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := suite.CP.Client.CoreV1().ConfigMaps(ns).Get(ctx, configmap.Name(ip), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Data["ip"] = "not an address"
	if _, err := suite.CP.Client.CoreV1().ConfigMaps(ns).Update(ctx, raw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := b.GetLive(ctx, ip); err == nil {
		t.Fatalf("GetLive of a malformed reservation = %+v, %v, nil; want an error (version was %s)", got, ok, cm.Version)
	}
}
