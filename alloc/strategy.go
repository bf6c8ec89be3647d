package alloc

import (
	"hash/fnv"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Next is the allocation decision, a pure function: the candidate address of
// family f from pool (usable addresses) given the taken set, the strategy and,
// for StrategyHash, the owner key (namespace/name). skip, if not nil, vetoes
// addresses the taken set does not know about (held by live Services or
// IPAddress objects, or lost to a concurrent writer in this request). ok is
// false when the pool has no free address of the family.
//
// Cost: one binary search per run of taken addresses skipped, so the lowest
// free address of a pool whose first 100k addresses are taken is found in
// O(log n), and an IPv6 /64 pool costs no more than a /28.
func Next(pool *IPSet, f corev1.IPFamily, taken *IPSet, s Strategy, key string, skip func(netip.Addr) bool) (netip.Addr, bool) {
	if pool == nil {
		return netip.Addr{}, false
	}
	sp := pool.spans(f)
	if len(sp) == 0 {
		return netip.Addr{}, false
	}
	if s != StrategyHash {
		for _, x := range sp {
			if a, ok := scan(f, x.lo, x.hi, taken, skip); ok {
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	// Start at hash(key) mod size, mapped across the pool's intervals, then
	// probe upwards and wrap around to the start.
	var size u128
	for _, x := range sp {
		n, _ := x.hi.sub(x.lo).inc()
		size, _ = size.add(n) // at most 2^64 intervals of a /64: no overflow in practice
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	off := u128{0, h.Sum64()}
	if size.hi == 0 && size.lo != 0 {
		off = u128{0, off.lo % size.lo}
	}
	start, idx := sp[0].lo, 0
	for i, x := range sp {
		n, _ := x.hi.sub(x.lo).inc()
		if off.cmp(n) < 0 {
			start, idx = x.lo.add1(off), i
			break
		}
		off = off.sub(n)
	}
	if a, ok := scan(f, start, sp[idx].hi, taken, skip); ok {
		return a, true
	}
	for i := 1; i <= len(sp); i++ {
		j := (idx + i) % len(sp)
		hi := sp[j].hi
		if j == idx {
			if start == sp[j].lo {
				break
			}
			hi = start.dec()
		}
		if a, ok := scan(f, sp[j].lo, hi, taken, skip); ok {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (a u128) add1(b u128) u128 { v, _ := a.add(b); return v }

// NextRank is the decision of StrategyLowest when several writers share the
// pool: the free address of the given rank, counting from 0 at the lowest
// free one (neither taken nor skipped) of family f. With fewer than rank+1
// free addresses it returns the (rank mod k)-th of the k there are, so any
// rank finds an address while one is free; rank 0 is Next's answer. ok is
// false when the pool has no free address of the family.
//
// Cost: one Next step per rank, so rank stays small (Options.Spread).
func NextRank(pool *IPSet, f corev1.IPFamily, taken *IPSet, rank int, skip func(netip.Addr) bool) (netip.Addr, bool) {
	if pool == nil || rank < 0 {
		return netip.Addr{}, false
	}
	var found []netip.Addr
	for _, x := range pool.spans(f) {
		cur := x.lo
		for {
			a, ok := scan(f, cur, x.hi, taken, skip)
			if !ok {
				break
			}
			if len(found) == rank {
				return a, true
			}
			found = append(found, a)
			v := toU128(a)
			if v == x.hi {
				break
			}
			cur = v.inc1()
		}
	}
	if len(found) == 0 {
		return netip.Addr{}, false
	}
	return found[rank%len(found)], true
}

// scan returns the first address in [lo, hi] neither taken nor skipped.
func scan(f corev1.IPFamily, lo, hi u128, taken *IPSet, skip func(netip.Addr) bool) (netip.Addr, bool) {
	cur := lo
	for {
		var ok bool
		cur, ok = taken.firstNotIn(f, cur)
		if !ok || cur.cmp(hi) > 0 {
			return netip.Addr{}, false
		}
		a := fromU128(cur, f)
		if skip == nil || !skip(a) {
			return a, true
		}
		if cur == hi {
			return netip.Addr{}, false
		}
		cur = cur.inc1()
	}
}
