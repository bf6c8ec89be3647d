package alloc_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
)

const benchReservations = 100_000

// benchPools: an IPv4 /12 (1M addresses) and an IPv6 /64, both far larger
// than the 100k reservations they hold.
var benchPools = map[string]struct {
	fam  corev1.IPFamily
	pool string
}{
	"IPv4 /12": {v4, "10.96.0.0/12"},
	"IPv6 /64": {v6, "fd00:10:96::/64"},
}

func benchSet(b *testing.B, s string) *alloc.IPSet {
	r, err := alloc.ParseRange(s)
	if err != nil {
		b.Fatal(err)
	}
	set := &alloc.IPSet{}
	set.AddRange(r)
	return set
}

// fill returns 100k taken addresses of pool laid out as layout says.
func fill(pool *alloc.IPSet, fam corev1.IPFamily, layout string) []netip.Addr {
	first := pool.Ranges(fam)[0].From
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([]netip.Addr, 0, benchReservations)
	a := first
	for len(out) < benchReservations {
		switch layout {
		case "contiguous": // what "lowest" produces
			out = append(out, a)
			a = a.Next()
		case "every-other": // worst case for interval count
			out = append(out, a)
			a = a.Next().Next()
		case "random": // what "hash" produces
			a = a.Next()
			for range rng.IntN(8) {
				a = a.Next()
			}
			out = append(out, a)
		}
	}
	return out
}

// BenchmarkNext is the allocation decision alone (the pure function) with
// 100k reservations in the pool. Goal: < 10 µs/op.
//
// Measured on the 2-core CI machine (go test -bench Next ./alloc):
// see docs/allocator.md for the table; every case is well under 1 µs.
func BenchmarkNext(b *testing.B) {
	for name, p := range benchPools {
		pool := benchSet(b, p.pool)
		for _, layout := range []string{"contiguous", "every-other", "random"} {
			taken := &alloc.IPSet{}
			for _, a := range fill(pool, p.fam, layout) {
				taken.Add(a)
			}
			for _, s := range []alloc.Strategy{alloc.StrategyLowest, alloc.StrategyHash} {
				b.Run(fmt.Sprintf("%s/%s/%s", name, layout, s), func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						i++
						if _, ok := alloc.Next(pool, p.fam, taken, s, fmt.Sprint("ns/svc-", i), nil); !ok {
							b.Fatal("pool full")
						}
					}
					b.ReportMetric(float64(taken.Intervals(p.fam)), "intervals")
				})
			}
		}
	}
}

// BenchmarkReserveMemory is a whole Reserve (selection, idempotency lookup,
// decision, store create) on the memory store holding 100k reservations,
// and reports the memory the store spends per reservation.
func BenchmarkReserveMemory(b *testing.B) {
	for name, p := range benchPools {
		for _, s := range []alloc.Strategy{alloc.StrategyLowest, alloc.StrategyHash} {
			b.Run(fmt.Sprintf("%s/%s", name, s), func(b *testing.B) {
				key := map[corev1.IPFamily]string{v4: "ipv4", v6: "ipv6"}[p.fam]
				// The network (and IPv4 broadcast) address must be excluded
				// explicitly: Compile refuses pools holding them.
				whole := alloc.RangeFromPrefix(netip.MustParsePrefix(p.pool))
				doc := fmt.Sprintf("apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\ndefaultPool: big\npools:\n- name: big\n  strategy: %s\n  addresses: {%s: [%q]}\n  exclude: [%q, %q]\n",
					s, key, p.pool, whole.From, whole.To)
				c, err := alloc.ParseConfig([]byte(doc))
				if err != nil {
					b.Fatal(err)
				}
				cidrs := []netip.Prefix{netip.MustParsePrefix(p.pool)}
				pools, err := alloc.Compile(c, cidrs)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				store := memory.New()
				now := time.Now()
				for i, a := range fill(pools.Default.Addresses, p.fam, "random") {
					_, err := store.Create(bg, alloc.Reservation{IP: a, Pool: "big", State: alloc.StateBound, Created: now, Updated: now,
						Owner: alloc.Owner{Namespace: "apps", Name: fmt.Sprintf("svc-%06d", i), UID: "0b1c7e3a-4d2f-4c5e-9a7b-1f2e3d4c5b6a"}})
					if err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perRes := float64(after.HeapAlloc-before.HeapAlloc) / benchReservations
				a, err := alloc.New(store, pools, alloc.Options{})
				if err != nil {
					b.Fatal(err)
				}
				fams := []corev1.IPFamily{p.fam}
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					i++
					if _, err := a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "bench", Name: fmt.Sprint("new-", i)}, Families: fams}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(perRes, "B/reservation")
				runtime.KeepAlive(store)
			})
		}
	}
}
