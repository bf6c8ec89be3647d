package alloc

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// brute lists a small pool's addresses in order, with netip's own Next,
// independently of the interval arithmetic under test.
func brute(pool *IPSet, f corev1.IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, r := range pool.Ranges(f) {
		for a := r.From; ; a = a.Next() {
			out = append(out, a)
			if a == r.To {
				break
			}
		}
	}
	return out
}

func poolOf(t *testing.T, entries ...string) *IPSet {
	t.Helper()
	s := &IPSet{}
	for _, e := range entries {
		r, err := ParseRange(e)
		if err != nil {
			t.Fatal(err)
		}
		s.AddRange(r)
	}
	return s
}

var strategyPools = map[string]struct {
	fam     corev1.IPFamily
	entries []string
}{
	"IPv4 range and single":     {v4, []string{"10.96.0.10-10.96.0.40", "10.96.0.99"}},
	"IPv4 across an octet":      {v4, []string{"10.96.0.250-10.96.1.20"}},
	"IPv6 range":                {v6, []string{"fd00:10:96::10-fd00:10:96::40"}},
	"IPv6 across 64-bit border": {v6, []string{"fd00::ffff:ffff:ffff:fff0-fd00:0:0:1::10", "fd00::1:0:0:5"}},
}

// TestLowestMatchesBruteForce: for random taken sets, Next(lowest) is the
// first pool address not taken, and "full" exactly when none is left.
func TestLowestMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for name, tc := range strategyPools {
		t.Run(name, func(t *testing.T) {
			pool := poolOf(t, tc.entries...)
			all := brute(pool, tc.fam)
			for round := range 200 {
				taken := &IPSet{}
				density := rng.Float64()
				if round == 0 {
					density = 1 // full
				}
				for _, a := range all {
					if rng.Float64() < density {
						taken.Add(a)
					}
				}
				var want netip.Addr
				for _, a := range all {
					if !taken.Contains(a) {
						want = a
						break
					}
				}
				got, ok := Next(pool, tc.fam, taken, StrategyLowest, "ns/x", nil)
				if ok != want.IsValid() || got != want {
					t.Fatalf("round %d: Next = %s,%v; want %s", round, got, ok, want)
				}
			}
		})
	}
}

// TestLowestOrder: allocating one after the other walks the pool in order,
// and a skip veto (live Service, lost race) is stepped over.
func TestLowestOrder(t *testing.T) {
	for name, tc := range strategyPools {
		t.Run(name, func(t *testing.T) {
			pool := poolOf(t, tc.entries...)
			all := brute(pool, tc.fam)
			vetoed := all[3]
			skip := func(a netip.Addr) bool { return a == vetoed }
			taken := &IPSet{}
			var got []netip.Addr
			for {
				a, ok := Next(pool, tc.fam, taken, StrategyLowest, "", skip)
				if !ok {
					break
				}
				got = append(got, a)
				taken.Add(a)
			}
			var want []netip.Addr
			for _, a := range all {
				if a != vetoed {
					want = append(want, a)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("order\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestHash: the start depends only on key and pool (stable across runs and
// replicas, whatever the order of the pool's entries), probing goes upwards
// and wraps, and keys spread over the pool.
func TestHash(t *testing.T) {
	for name, tc := range strategyPools {
		t.Run(name, func(t *testing.T) {
			pool := poolOf(t, tc.entries...)
			reversed := make([]string, len(tc.entries))
			for i, e := range tc.entries {
				reversed[len(tc.entries)-1-i] = e
			}
			replica := poolOf(t, reversed...) // another process, another document order
			all := brute(pool, tc.fam)
			starts := map[netip.Addr]bool{}
			for i := range 64 {
				key := fmt.Sprintf("ns-%d/svc", i)
				a, ok := Next(pool, tc.fam, &IPSet{}, StrategyHash, key, nil)
				b, _ := Next(replica, tc.fam, &IPSet{}, StrategyHash, key, nil)
				if !ok || a != b || !pool.Contains(a) {
					t.Fatalf("key %s: %s vs replica %s (ok %v)", key, a, b, ok)
				}
				starts[a] = true
				// Take the start: the next free one cyclically is chosen.
				taken := &IPSet{}
				taken.Add(a)
				idx := 0
				for i, x := range all {
					if x == a {
						idx = i
					}
				}
				want := all[(idx+1)%len(all)]
				if got, _ := Next(pool, tc.fam, taken, StrategyHash, key, nil); got != want {
					t.Errorf("key %s: probe after %s = %s, want %s", key, a, got, want)
				}
			}
			if len(starts) < 64/3 {
				t.Errorf("64 keys share only %d start addresses in a pool of %d", len(starts), len(all))
			}
			full := &IPSet{}
			for _, a := range all {
				full.Add(a)
			}
			if a, ok := Next(pool, tc.fam, full, StrategyHash, "ns/x", nil); ok {
				t.Errorf("full pool handed out %s", a)
			}
		})
	}
}

// TestHugePools: an IPv6 /64 and an IPv4 /8 are searched, not enumerated.
func TestHugePools(t *testing.T) {
	for name, tc := range map[string]struct {
		fam          corev1.IPFamily
		pool, taken0 string
	}{
		"IPv6 /64 with its first 2^40 taken": {v6, "fd00:10:96::/64", "fd00:10:96::-fd00:10:96::ff:ffff:ffff"},
		"IPv4 /8 with its first 2^20 taken":  {v4, "10.0.0.0/8", "10.0.0.0-10.15.255.255"},
	} {
		t.Run(name, func(t *testing.T) {
			pool := poolOf(t, tc.pool)
			taken := poolOf(t, tc.taken0)
			want := taken.Ranges(tc.fam)[0].To.Next()
			if got, ok := Next(pool, tc.fam, taken, StrategyLowest, "", nil); !ok || got != want {
				t.Errorf("lowest = %s, want %s", got, want)
			}
			got, ok := Next(pool, tc.fam, taken, StrategyHash, "ns/svc", nil)
			if !ok || !pool.Contains(got) || taken.Contains(got) {
				t.Errorf("hash = %s (%v): not a free pool address", got, ok)
			}
		})
	}
}
