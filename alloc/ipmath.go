package alloc

import (
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/google/btree"
	corev1 "k8s.io/api/core/v1"
)

// u128 is an address as a 128-bit unsigned integer. IPv4 addresses use the
// low 32 bits; the family travels separately, so the two families never mix
// in one ordering.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a u128) add(b u128) (u128, bool) {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c2 := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}, c2 != 0
}

func (a u128) sub(b u128) u128 {
	lo, br := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, br)
	return u128{hi, lo}
}

func (a u128) inc() (u128, bool) { return a.add(u128{0, 1}) }
func (a u128) dec() u128         { return a.sub(u128{0, 1}) }

// mod64 returns a mod m for m > 0.
func (a u128) mod64(m uint64) uint64 {
	_, r := bits.Div64(a.hi%m, a.lo, m)
	return r
}

func (a u128) big() *big.Int {
	v := new(big.Int).SetUint64(a.hi)
	v.Lsh(v, 64)
	return v.Or(v, new(big.Int).SetUint64(a.lo))
}

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var hi, lo uint64
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return u128{hi, lo}
}

func fromU128(v u128, f corev1.IPFamily) netip.Addr {
	if f == corev1.IPv4Protocol {
		return netip.AddrFrom4([4]byte{byte(v.lo >> 24), byte(v.lo >> 16), byte(v.lo >> 8), byte(v.lo)})
	}
	var b [16]byte
	for i := range 8 {
		b[7-i] = byte(v.hi >> (8 * i))
		b[15-i] = byte(v.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

// FamilyOf returns the IP family of a; IPv4-mapped IPv6 addresses are IPv6
// (the apiserver never hands them out and pools reject them).
func FamilyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// Range is an inclusive interval of addresses of one family. A single
// address has From == To.
type Range struct {
	From, To netip.Addr
}

// Family is the range's IP family.
func (r Range) Family() corev1.IPFamily { return FamilyOf(r.From) }

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.IsValid() && a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// String renders r in the pool syntax: "a" or "a-b".
func (r Range) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// Size is the number of addresses in r (2^64 for an IPv6 /64, hence big).
func (r Range) Size() *big.Int {
	n, _ := toU128(r.To).sub(toU128(r.From)).inc()
	return n.big()
}

// RangeFromPrefix returns every address of p, network address included: the
// pool syntax means what it says, and validation rejects the addresses the
// apiserver never allocates instead of skipping them silently.
func RangeFromPrefix(p netip.Prefix) Range {
	p = p.Masked()
	lo := toU128(p.Addr())
	host := uint(p.Addr().BitLen() - p.Bits())
	var span u128 // 2^host - 1
	switch {
	case host >= 128:
		span = u128{^uint64(0), ^uint64(0)}
	case host >= 64:
		span = u128{(uint64(1) << (host - 64)) - 1, ^uint64(0)}
	default:
		span = u128{0, (uint64(1) << host) - 1}
	}
	hi, _ := lo.add(span)
	return Range{From: p.Addr(), To: fromU128(hi, FamilyOf(p.Addr()))}
}

// ParseRange parses one pool entry: a CIDR ("10.96.0.0/28"), a range
// ("10.96.0.10-10.96.0.20", both ends included) or a single address. It
// refuses zones, IPv4-mapped IPv6 addresses, CIDRs with host bits set, ranges
// that run backwards and ranges whose ends are of different families, because
// each of those is more likely a typo than an intent.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, fmt.Errorf("empty address")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("malformed CIDR %q: %w", s, err)
		}
		if err := checkAddr(p.Addr()); err != nil {
			return Range{}, fmt.Errorf("CIDR %q: %w", s, err)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return RangeFromPrefix(p), nil
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, err := parseAddr(from)
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		b, err := parseAddr(to)
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if b.Less(a) {
			return Range{}, fmt.Errorf("range %q runs backwards (%s > %s)", s, a, b)
		}
		return Range{From: a, To: b}, nil
	}
	a, err := parseAddr(s)
	if err != nil {
		return Range{}, err
	}
	return Range{From: a, To: a}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("malformed address %q: %w", strings.TrimSpace(s), err)
	}
	return a, checkAddr(a)
}

func checkAddr(a netip.Addr) error {
	if a.Zone() != "" {
		return fmt.Errorf("address %s has a zone", a)
	}
	if a.Is4In6() {
		return fmt.Errorf("address %s is IPv4-mapped IPv6; write it as %s", a, a.Unmap())
	}
	return nil
}

// StaticBandOffset is KEP-3070's reserved-band size for a ServiceCIDR of
// prefix p: 0 when the CIDR has at most 16 addresses, else
// min(max(16, size/16), 256). Mirrors calculateRangeOffset of
// kubernetes pkg/registry/core/service/ipallocator.
func StaticBandOffset(p netip.Prefix) int {
	host := p.Addr().BitLen() - p.Bits()
	if host <= 4 { // size = 2^host <= 16
		return 0
	}
	if host-4 >= 8 { // size/16 >= 256
		return 256
	}
	return max(16, 1<<(host-4))
}

// StaticBand returns the KEP-3070 static band of a ServiceCIDR: the first
// StaticBandOffset(p) addresses after the network address, which the
// apiserver's dynamic allocation uses last. ok is false when the CIDR is too
// small to have one.
func StaticBand(p netip.Prefix) (r Range, ok bool) {
	p = p.Masked()
	off := StaticBandOffset(p)
	if off == 0 {
		return Range{}, false
	}
	f := FamilyOf(p.Addr())
	net := toU128(p.Addr())
	first, _ := net.inc()
	last, _ := net.add(u128{0, uint64(off)})
	return Range{From: fromU128(first, f), To: fromU128(last, f)}, true
}

// span is an inclusive interval of u128 offsets.
type span struct{ lo, hi u128 }

func spanLess(a, b span) bool { return a.lo.cmp(b.lo) < 0 }

// btreeDegree: 32 keeps nodes within a few cache lines of 32-byte spans.
const btreeDegree = 32

// IPSet is a set of addresses of both families stored as disjoint,
// non-adjacent inclusive intervals in a B-tree ordered by start, so that an
// IPv6 /64 costs one interval, a run of consecutive reservations coalesces,
// and adding, removing or searching costs O(log n) in the number of
// intervals even at 100k scattered reservations (a sorted slice would
// memmove megabytes per insert there). The zero value is empty and ready to
// use. Concurrent reads are safe; writes need exclusive access.
type IPSet struct {
	v4, v6 *btree.BTreeG[span]
}

func (s *IPSet) tree(f corev1.IPFamily, create bool) *btree.BTreeG[span] {
	p := &s.v6
	if f == corev1.IPv4Protocol {
		p = &s.v4
	}
	if *p == nil && create {
		*p = btree.NewG[span](btreeDegree, spanLess)
	}
	return *p
}

// floor returns the interval with the greatest start <= v.
func floor(t *btree.BTreeG[span], v u128) (got span, ok bool) {
	if t == nil {
		return span{}, false
	}
	t.DescendLessOrEqual(span{lo: v}, func(x span) bool { got, ok = x, true; return false })
	return got, ok
}

// spans lists the intervals of family f in order.
func (s *IPSet) spans(f corev1.IPFamily) []span {
	if s == nil {
		return nil
	}
	t := s.tree(f, false)
	if t == nil {
		return nil
	}
	out := make([]span, 0, t.Len())
	t.Ascend(func(x span) bool { out = append(out, x); return true })
	return out
}

// AddRange adds every address of r.
func (s *IPSet) AddRange(r Range) {
	if !r.From.IsValid() || !r.To.IsValid() {
		return
	}
	s.addSpan(r.Family(), span{toU128(r.From), toU128(r.To)})
}

// Add adds one address.
func (s *IPSet) Add(a netip.Addr) {
	if a.IsValid() {
		v := toU128(a)
		s.addSpan(FamilyOf(a), span{v, v})
	}
}

func (s *IPSet) addSpan(f corev1.IPFamily, n span) {
	t := s.tree(f, true)
	if p, ok := floor(t, n.lo); ok && (n.lo == (u128{}) || p.hi.cmp(n.lo.dec()) >= 0) {
		// The predecessor overlaps or touches n.
		if p.hi.cmp(n.hi) >= 0 {
			return // already covered
		}
		n.lo = p.lo
		t.Delete(p)
	}
	next, carry := n.hi.inc()
	var buf [4]span
	absorbed := buf[:0]
	t.AscendGreaterOrEqual(span{lo: n.lo}, func(x span) bool {
		if !carry && x.lo.cmp(next) > 0 {
			return false
		}
		absorbed = append(absorbed, x)
		return true
	})
	for _, x := range absorbed {
		if x.hi.cmp(n.hi) > 0 {
			n.hi = x.hi
		}
		t.Delete(x)
	}
	t.ReplaceOrInsert(n)
}

// Remove removes one address.
func (s *IPSet) Remove(a netip.Addr) {
	if a.IsValid() {
		v := toU128(a)
		s.removeSpan(FamilyOf(a), span{v, v})
	}
}

// RemoveRange removes every address of r.
func (s *IPSet) RemoveRange(r Range) {
	if r.From.IsValid() && r.To.IsValid() {
		s.removeSpan(r.Family(), span{toU128(r.From), toU128(r.To)})
	}
}

func (s *IPSet) removeSpan(f corev1.IPFamily, n span) {
	t := s.tree(f, false)
	if t == nil {
		return
	}
	var dbuf, kbuf [4]span
	dels, keep := dbuf[:0], kbuf[:0]
	if p, ok := floor(t, n.lo); ok && p.lo.cmp(n.lo) < 0 && p.hi.cmp(n.lo) >= 0 {
		dels = append(dels, p)
		keep = append(keep, span{p.lo, n.lo.dec()})
		if p.hi.cmp(n.hi) > 0 {
			keep = append(keep, span{n.hi.inc1(), p.hi})
		}
	}
	t.AscendGreaterOrEqual(span{lo: n.lo}, func(x span) bool {
		if x.lo.cmp(n.hi) > 0 {
			return false
		}
		dels = append(dels, x)
		if x.hi.cmp(n.hi) > 0 {
			keep = append(keep, span{n.hi.inc1(), x.hi})
		}
		return true
	})
	for _, x := range dels {
		t.Delete(x)
	}
	for _, x := range keep {
		t.ReplaceOrInsert(x)
	}
}

func (a u128) inc1() u128 { v, _ := a.inc(); return v }

// Contains reports whether a is in the set.
func (s *IPSet) Contains(a netip.Addr) bool {
	if s == nil || !a.IsValid() {
		return false
	}
	v := toU128(a)
	p, ok := floor(s.tree(FamilyOf(a), false), v)
	return ok && p.hi.cmp(v) >= 0
}

// Ranges lists the set's intervals of family f in ascending order.
func (s *IPSet) Ranges(f corev1.IPFamily) []Range {
	sp := s.spans(f)
	out := make([]Range, len(sp))
	for i, x := range sp {
		out[i] = Range{fromU128(x.lo, f), fromU128(x.hi, f)}
	}
	return out
}

// Empty reports whether the set has no address of family f.
func (s *IPSet) Empty(f corev1.IPFamily) bool { return s.Intervals(f) == 0 }

// Size is the number of addresses of family f in the set.
func (s *IPSet) Size(f corev1.IPFamily) *big.Int {
	n := new(big.Int)
	for _, x := range s.spans(f) {
		c, _ := x.hi.sub(x.lo).inc()
		n.Add(n, c.big())
	}
	return n
}

// Intervals is the number of disjoint intervals of family f (memory is
// proportional to it, not to the number of addresses).
func (s *IPSet) Intervals(f corev1.IPFamily) int {
	if s == nil {
		return 0
	}
	if t := s.tree(f, false); t != nil {
		return t.Len()
	}
	return 0
}

// Clone returns an independent copy (copy-on-write: cheap until written).
func (s *IPSet) Clone() *IPSet {
	c := &IPSet{}
	if s == nil {
		return c
	}
	if s.v4 != nil {
		c.v4 = s.v4.Clone()
	}
	if s.v6 != nil {
		c.v6 = s.v6.Clone()
	}
	return c
}

// Overlap returns the first address (lowest, IPv4 before IPv6) that both s
// and o contain.
func (s *IPSet) Overlap(o *IPSet) (netip.Addr, bool) {
	if s == nil || o == nil {
		return netip.Addr{}, false
	}
	for _, f := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		a, b := s.spans(f), o.spans(f)
		for i, j := 0, 0; i < len(a) && j < len(b); {
			lo := a[i].lo
			if b[j].lo.cmp(lo) > 0 {
				lo = b[j].lo
			}
			hi := a[i].hi
			if b[j].hi.cmp(hi) < 0 {
				hi = b[j].hi
			}
			if lo.cmp(hi) <= 0 {
				return fromU128(lo, f), true
			}
			if a[i].hi.cmp(b[j].hi) < 0 {
				i++
			} else {
				j++
			}
		}
	}
	return netip.Addr{}, false
}

// firstNotIn returns the lowest offset >= v that s does not contain; ok is
// false when every offset from v to the top of the address space is in s.
func (s *IPSet) firstNotIn(f corev1.IPFamily, v u128) (u128, bool) {
	if s == nil {
		return v, true
	}
	// Intervals never touch, so the one holding v ends right before a gap.
	if p, ok := floor(s.tree(f, false), v); ok && p.hi.cmp(v) >= 0 {
		n, carry := p.hi.inc()
		return n, !carry
	}
	return v, true
}

// KubernetesServiceHolder stands in, where there is no cluster to ask
// (serve --dev, tests), for the Service every apiserver has:
// default/kubernetes holds the first address of the primary range
// (GetIndexedIP(range, 1)). Without it the first pinned Service would get an
// address no cluster could give it. cidrs are primary first; nil if empty.
func KubernetesServiceHolder(cidrs []netip.Prefix) HolderFunc {
	if len(cidrs) == 0 {
		return nil
	}
	first := cidrs[0].Masked().Addr().Next()
	return func(ip netip.Addr) (string, bool) {
		if ip == first {
			return "default/kubernetes", true
		}
		return "", false
	}
}
