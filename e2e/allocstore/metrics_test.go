package allocstore

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// TestStoreRequestMetrics: with Options.Metrics, every request the store
// makes to the apiserver is timed under its verb and result, AlreadyExists
// and Conflict apart from success, in both families.
func TestStoreRequestMetrics(t *testing.T) {
	suite.Need(t)
	ns := namespace(t, "metrics")
	reg := prometheus.NewPedanticRegistry()
	m, err := configmap.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStoreWith(t, configmap.Options{Namespace: ns, Metrics: m})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	for _, ip := range []string{"10.96.0.9", "fd00:10:96::9"} {
		r := alloc.Reservation{IP: netip.MustParseAddr(ip), Pool: "web", Owner: alloc.Owner{Namespace: "shop", Name: "web"},
			State: alloc.StatePending, Created: now, Updated: now, Expires: now.Add(time.Minute)}
		saved, err := s.Create(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create(ctx, r); !errors.Is(err, alloc.ErrExists) {
			t.Fatalf("%s: second create: %v", ip, err)
		}
		next := saved
		next.State = alloc.StateBound
		if _, err := s.Update(ctx, next); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, next); !errors.Is(err, alloc.ErrConflict) { // the version it carries is gone
			t.Fatalf("%s: stale update: %v", ip, err)
		}
		if _, _, err := s.GetLive(ctx, r.IP); err != nil {
			t.Fatal(err)
		}
	}
	want := map[[2]string]int{{"create", "ok"}: 2, {"create", "exists"}: 2, {"update", "ok"}: 2, {"update", "conflict"}: 2, {"get", "ok"}: 2}
	got := map[[2]string]int{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			var verb, result string
			for _, l := range metric.GetLabel() {
				switch l.GetName() {
				case "verb":
					verb = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			got[[2]string{verb, result}] = int(metric.GetHistogram().GetSampleCount())
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s/%s: %d requests timed, want %d", k[0], k[1], got[k], n)
		}
	}
}
