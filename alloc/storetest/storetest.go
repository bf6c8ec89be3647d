package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// addrs are the addresses each case is run with: IPv4, IPv6, an IPv6 whose
// canonical text ends in "::" and one with an embedded zero run, because
// backends derive object names from the text.
var addrs = map[string][]netip.Addr{
	"IPv4":      {netip.MustParseAddr("10.96.0.12"), netip.MustParseAddr("10.96.0.13"), netip.MustParseAddr("10.96.1.0")},
	"IPv6":      {netip.MustParseAddr("fd00:10:96::c"), netip.MustParseAddr("fd00:10:96::d"), netip.MustParseAddr("fd00:10:96:0:1::")},
	"IPv4,IPv6": {netip.MustParseAddr("10.96.0.12"), netip.MustParseAddr("fd00:10:96::c"), netip.MustParseAddr("10.96.0.13")},
	"IPv6,IPv4": {netip.MustParseAddr("fd00:10:96::c"), netip.MustParseAddr("10.96.0.12"), netip.MustParseAddr("fd00:10:96::a:0")},
}

// Compare ignores Version (opaque) and compares times with Equal, at the
// millisecond: a backend may persist times as text.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmpopts.IgnoreFields(alloc.Reservation{}, "Version"),
	cmp.Comparer(func(a, b time.Time) bool { return a.Truncate(time.Millisecond).Equal(b.Truncate(time.Millisecond)) }),
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func res(ip netip.Addr, ns, name string, st alloc.State) alloc.Reservation {
	now := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	r := alloc.Reservation{IP: ip, Pool: "pool-a", Owner: alloc.Owner{Namespace: ns, Name: name, RequestUID: "req-" + name}, State: st, Created: now, Updated: now}
	if st != alloc.StateBound {
		r.Expires = now.Add(10 * time.Minute)
	}
	return r
}

// Run runs the contract against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) alloc.Store) {
	t.Helper()
	for fam, ips := range addrs {
		t.Run(fam, func(t *testing.T) {
			t.Run("create then read back every field", func(t *testing.T) { createRead(t, newStore(t), ips) })
			t.Run("second create of an address is ErrExists", func(t *testing.T) { createTwice(t, newStore(t), ips) })
			t.Run("update is compare-and-swap on Version", func(t *testing.T) { updateCAS(t, newStore(t), ips) })
			t.Run("delete is compare-and-swap on Version", func(t *testing.T) { deleteCAS(t, newStore(t), ips) })
			t.Run("owner index follows writes", func(t *testing.T) { ownerIndex(t, newStore(t), ips) })
			t.Run("taken set and list reflect own writes at once", func(t *testing.T) { takenList(t, newStore(t), ips) })
			t.Run("concurrent creates of one address: exactly one wins", func(t *testing.T) { raceCreate(t, newStore(t), ips[0]) })
			t.Run("concurrent updates of one version: exactly one wins", func(t *testing.T) { raceUpdate(t, newStore(t), ips[0]) })
		})
	}
}

func mustCreate(t *testing.T, s alloc.Store, r alloc.Reservation) alloc.Reservation {
	t.Helper()
	got, err := s.Create(ctx(t), r)
	if err != nil {
		t.Fatalf("Create(%s): %v", r.IP, err)
	}
	if got.Version == "" {
		t.Fatalf("Create(%s) returned no Version", r.IP)
	}
	return got
}

func createRead(t *testing.T, s alloc.Store, ips []netip.Addr) {
	want := []alloc.Reservation{
		res(ips[0], "ns1", "web", alloc.StatePending),
		res(ips[1], "ns1", "db", alloc.StateBound),
		res(ips[2], "ns2", "gone", alloc.StateSticky),
	}
	want[1].Owner.UID = "3f1c"
	want[1].Owner.RequestUID = ""
	gen := res(ips[2], "ns3", "", alloc.StatePending)
	gen.Owner.GenerateName, gen.Owner.RequestUID, gen.Pool = "job-", "9b2e", ""
	for _, r := range want {
		mustCreate(t, s, r)
	}
	for _, r := range want {
		got, ok, err := s.Get(ctx(t), r.IP)
		if err != nil || !ok {
			t.Fatalf("Get(%s) = ok %v, err %v", r.IP, ok, err)
		}
		if d := cmp.Diff(r, got, cmpOpts); d != "" {
			t.Errorf("Get(%s) mismatch (-want +got):\n%s", r.IP, d)
		}
	}
	// A generateName owner and an empty pool survive the round trip too.
	last := want[2]
	got, _, _ := s.Get(ctx(t), last.IP)
	if err := s.Delete(ctx(t), got); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, gen)
	back, ok, err := s.Get(ctx(t), gen.IP)
	if err != nil || !ok {
		t.Fatalf("Get(%s) after re-create = ok %v, err %v", gen.IP, ok, err)
	}
	if d := cmp.Diff(gen, back, cmpOpts); d != "" {
		t.Errorf("generateName owner mismatch (-want +got):\n%s", d)
	}
	if _, ok, err := s.Get(ctx(t), netip.MustParseAddr("10.96.3.3")); ok || err != nil {
		t.Errorf("Get(absent) = ok %v, err %v; want false, nil", ok, err)
	}
}

func createTwice(t *testing.T, s alloc.Store, ips []netip.Addr) {
	mustCreate(t, s, res(ips[0], "ns1", "first", alloc.StatePending))
	_, err := s.Create(ctx(t), res(ips[0], "ns1", "second", alloc.StatePending))
	if !errors.Is(err, alloc.ErrExists) {
		t.Fatalf("second Create(%s) = %v, want ErrExists", ips[0], err)
	}
	got, _, _ := s.Get(ctx(t), ips[0])
	if got.Owner.Name != "first" {
		t.Errorf("owner after lost create = %q, want first", got.Owner.Name)
	}
}

func updateCAS(t *testing.T, s alloc.Store, ips []netip.Addr) {
	v1 := mustCreate(t, s, res(ips[0], "ns1", "web", alloc.StatePending))
	next := v1
	next.State, next.Owner.UID, next.Expires = alloc.StateBound, "uid-1", time.Time{}
	v2, err := s.Update(ctx(t), next)
	if err != nil {
		t.Fatalf("Update with current version: %v", err)
	}
	if v2.Version == v1.Version {
		t.Errorf("Update kept Version %q", v2.Version)
	}
	got, _, _ := s.Get(ctx(t), ips[0])
	if d := cmp.Diff(next, got, cmpOpts); d != "" {
		t.Errorf("after Update (-want +got):\n%s", d)
	}
	if got.Version != v2.Version {
		t.Errorf("Get Version %q, Update returned %q", got.Version, v2.Version)
	}
	stale := v1
	stale.Owner.Name = "thief"
	if _, err := s.Update(ctx(t), stale); !errors.Is(err, alloc.ErrConflict) {
		t.Errorf("Update with stale version = %v, want ErrConflict", err)
	}
	if _, err := s.Update(ctx(t), res(ips[1], "ns1", "none", alloc.StatePending)); !errors.Is(err, alloc.ErrNotFound) {
		t.Errorf("Update of absent = %v, want ErrNotFound", err)
	}
}

func deleteCAS(t *testing.T, s alloc.Store, ips []netip.Addr) {
	v1 := mustCreate(t, s, res(ips[0], "ns1", "web", alloc.StatePending))
	next := v1
	next.State = alloc.StateSticky
	v2, err := s.Update(ctx(t), next)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx(t), v1); !errors.Is(err, alloc.ErrConflict) {
		t.Errorf("Delete with stale version = %v, want ErrConflict", err)
	}
	if err := s.Delete(ctx(t), v2); err != nil {
		t.Fatalf("Delete with current version: %v", err)
	}
	if _, ok, err := s.Get(ctx(t), ips[0]); ok || err != nil {
		t.Errorf("Get after Delete = ok %v, err %v", ok, err)
	}
	if err := s.Delete(ctx(t), v2); !errors.Is(err, alloc.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	// The address is free again.
	mustCreate(t, s, res(ips[0], "ns2", "again", alloc.StatePending))
}

func ownerIndex(t *testing.T, s alloc.Store, ips []netip.Addr) {
	a0 := mustCreate(t, s, res(ips[0], "ns1", "web", alloc.StatePending))
	mustCreate(t, s, res(ips[1], "ns1", "web", alloc.StatePending))
	mustCreate(t, s, res(ips[2], "ns1", "db", alloc.StatePending))
	keys := func(key string) []netip.Addr {
		t.Helper()
		rs, err := s.ByOwner(ctx(t), key)
		if err != nil {
			t.Fatal(err)
		}
		var out []netip.Addr
		for _, r := range rs {
			out = append(out, r.IP)
		}
		return out
	}
	sortAddrs := cmpopts.SortSlices(func(a, b netip.Addr) bool { return a.Less(b) })
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if d := cmp.Diff([]netip.Addr{ips[0], ips[1]}, keys("ns1/web"), sortAddrs, eq); d != "" {
		t.Errorf("ByOwner(ns1/web) (-want +got):\n%s", d)
	}
	moved := a0
	moved.Owner.Name = "api"
	if _, err := s.Update(ctx(t), moved); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]netip.Addr{ips[1]}, keys("ns1/web"), eq); d != "" {
		t.Errorf("ByOwner(ns1/web) after owner change (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]netip.Addr{ips[0]}, keys("ns1/api"), eq); d != "" {
		t.Errorf("ByOwner(ns1/api) (-want +got):\n%s", d)
	}
	if got := keys("ns2/web"); len(got) != 0 {
		t.Errorf("ByOwner(ns2/web) = %v, want none", got)
	}
}

func takenList(t *testing.T, s alloc.Store, ips []netip.Addr) {
	var rs []alloc.Reservation
	for i, ip := range ips {
		rs = append(rs, mustCreate(t, s, res(ip, "ns1", fmt.Sprintf("svc-%d", i), alloc.StatePending)))
	}
	check := func(want map[netip.Addr]bool) {
		t.Helper()
		err := s.Taken(ctx(t), func(taken *alloc.IPSet) {
			for ip, in := range want {
				if taken.Contains(ip) != in {
					t.Errorf("Taken contains %s = %v, want %v", ip, !in, in)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		all, err := s.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		got := map[netip.Addr]bool{}
		for _, r := range all {
			got[r.IP] = true
		}
		for ip, in := range want {
			if got[ip] != in {
				t.Errorf("List has %s = %v, want %v", ip, got[ip], in)
			}
		}
		n := 0
		for _, in := range want {
			if in {
				n++
			}
		}
		if len(all) != n {
			t.Errorf("List has %d reservations, want %d", len(all), n)
		}
	}
	check(map[netip.Addr]bool{ips[0]: true, ips[1]: true, ips[2]: true})
	if err := s.Delete(ctx(t), rs[1]); err != nil {
		t.Fatal(err)
	}
	check(map[netip.Addr]bool{ips[0]: true, ips[1]: false, ips[2]: true})
}

func raceCreate(t *testing.T, s alloc.Store, ip netip.Addr) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Create(ctx(t), res(ip, "ns1", fmt.Sprintf("svc-%d", i), alloc.StatePending))
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, alloc.ErrExists):
			t.Errorf("racing Create: %v, want nil or ErrExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d racing creates succeeded, want exactly 1", won)
	}
}

func raceUpdate(t *testing.T, s alloc.Store, ip netip.Addr) {
	base := mustCreate(t, s, res(ip, "ns1", "web", alloc.StatePending))
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r := base
			r.Owner.UID = fmt.Sprintf("uid-%d", i)
			r.State = alloc.StateBound
			_, errs[i] = s.Update(ctx(t), r)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, alloc.ErrConflict):
			t.Errorf("racing Update: %v, want nil or ErrConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d racing updates succeeded, want exactly 1", won)
	}
}
