package alloc

import (
	"math/big"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestU128RoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.96.0.1", "255.255.255.255", "::", "::1", "fd00:10:96::ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00::1:0:0:0"} {
		a := ip(s)
		if got := fromU128(toU128(a), FamilyOf(a)); got != a {
			t.Errorf("round trip %s = %s", a, got)
		}
		// Ordering of offsets is the ordering of addresses.
		if n := a.Next(); n.IsValid() && toU128(n).cmp(toU128(a)) <= 0 {
			t.Errorf("offset of %s not above offset of %s", n, a)
		}
	}
}

func TestParseRange(t *testing.T) {
	tests := map[string]struct {
		in       string
		from, to string
		size     int64 // -1: not checked (too big for int64)
		wantErr  bool
	}{
		"IPv4 CIDR includes network and broadcast": {in: "10.96.0.16/28", from: "10.96.0.16", to: "10.96.0.31", size: 16},
		"IPv4 range inclusive":                     {in: "10.96.0.10-10.96.0.20", from: "10.96.0.10", to: "10.96.0.20", size: 11},
		"IPv4 single address":                      {in: "10.96.0.99", from: "10.96.0.99", to: "10.96.0.99", size: 1},
		"IPv4 /32":                                 {in: "10.96.0.99/32", from: "10.96.0.99", to: "10.96.0.99", size: 1},
		"IPv4 spaces around the dash":              {in: " 10.96.0.1 - 10.96.0.2 ", from: "10.96.0.1", to: "10.96.0.2", size: 2},
		"IPv6 CIDR /120":                           {in: "fd00:10:96::100/120", from: "fd00:10:96::100", to: "fd00:10:96::1ff", size: 256},
		"IPv6 /64 is one interval":                 {in: "fd00:10:96::/64", from: "fd00:10:96::", to: "fd00:10:96::ffff:ffff:ffff:ffff", size: -1},
		"IPv6 range across a 64-bit boundary":      {in: "fd00:0:0:0:ffff:ffff:ffff:ffff-fd00:0:0:1::1", from: "fd00::ffff:ffff:ffff:ffff", to: "fd00:0:0:1::1", size: 3},
		"IPv6 single address":                      {in: "fd00:10:96::a", from: "fd00:10:96::a", to: "fd00:10:96::a", size: 1},
		"malformed IPv4":                           {in: "10.96.0.300", wantErr: true},
		"malformed IPv6":                           {in: "fd00::10::1", wantErr: true},
		"CIDR with host bits":                      {in: "10.96.0.5/24", wantErr: true},
		"IPv6 CIDR with host bits":                 {in: "fd00:10:96::5/120", wantErr: true},
		"range mixing families v4-v6":              {in: "10.96.0.1-fd00::1", wantErr: true},
		"range mixing families v6-v4":              {in: "fd00::1-10.96.0.1", wantErr: true},
		"IPv4 range backwards":                     {in: "10.96.0.9-10.96.0.1", wantErr: true},
		"IPv6 range backwards":                     {in: "fd00::9-fd00::1", wantErr: true},
		"IPv4-mapped IPv6 refused":                 {in: "::ffff:10.96.0.1", wantErr: true},
		"zone refused":                             {in: "fe80::1%eth0", wantErr: true},
		"empty":                                    {in: "", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := ParseRange(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseRange(%q) = %v, want an error", tc.in, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.in, err)
			}
			if r.From != ip(tc.from) || r.To != ip(tc.to) {
				t.Errorf("ParseRange(%q) = %s..%s, want %s..%s", tc.in, r.From, r.To, tc.from, tc.to)
			}
			if tc.size >= 0 && r.Size().Cmp(big.NewInt(tc.size)) != 0 {
				t.Errorf("size = %s, want %d", r.Size(), tc.size)
			}
		})
	}
	// A /64 holds 2^64 addresses: computed, never materialised.
	r, _ := ParseRange("fd00:10:96::/64")
	if want := new(big.Int).Lsh(big.NewInt(1), 64); r.Size().Cmp(want) != 0 {
		t.Errorf("/64 size = %s, want %s", r.Size(), want)
	}
}

// TestStaticBand checks KEP-3070's formula against the worked examples of
// the apiserver (docs/dualstack-rules.md §5.2), computed independently here from
// size = 2^(bits-prefix): offset = 0 if size <= 16 else min(max(16, size/16), 256).
func TestStaticBand(t *testing.T) {
	want := func(p netip.Prefix) int {
		host := p.Addr().BitLen() - p.Bits()
		if host > 40 {
			return 256
		}
		size := 1 << host
		if size <= 16 {
			return 0
		}
		return min(max(16, size/16), 256)
	}
	tests := map[string]struct {
		cidr     string
		from, to string // expected band, "" when none
	}{
		"IPv4 /16 (kubernetes default)":  {"10.96.0.0/16", "10.96.0.1", "10.96.1.0"},
		"IPv4 /24":                       {"10.96.0.0/24", "10.96.0.1", "10.96.0.16"},
		"IPv4 /27":                       {"10.96.0.32/27", "10.96.0.33", "10.96.0.48"},
		"IPv4 /28 has no band":           {"10.96.0.0/28", "", ""},
		"IPv4 /20":                       {"10.96.0.0/20", "10.96.0.1", "10.96.1.0"},
		"IPv4 /23":                       {"10.96.0.0/23", "10.96.0.1", "10.96.0.32"},
		"IPv6 /108 (kubernetes default)": {"fd00:10:96::/108", "fd00:10:96::1", "fd00:10:96::100"},
		"IPv6 /64":                       {"fd00:10:96::/64", "fd00:10:96::1", "fd00:10:96::100"},
		"IPv6 /120":                      {"fd00:10:96::/120", "fd00:10:96::1", "fd00:10:96::10"},
		"IPv6 /124 has no band":          {"fd00:10:96::/124", "", ""},
		"IPv6 /122":                      {"fd00:10:96::/122", "fd00:10:96::1", "fd00:10:96::10"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.cidr)
			if got := StaticBandOffset(p); got != want(p) {
				t.Errorf("StaticBandOffset(%s) = %d, formula says %d", p, got, want(p))
			}
			r, ok := StaticBand(p)
			if tc.from == "" {
				if ok {
					t.Errorf("StaticBand(%s) = %s, want none", p, r)
				}
				return
			}
			if !ok || r.From != ip(tc.from) || r.To != ip(tc.to) {
				t.Fatalf("StaticBand(%s) = %s (%v), want %s-%s", p, r, ok, tc.from, tc.to)
			}
			if r.Size().Int64() != int64(want(p)) {
				t.Errorf("band size %s, want %d", r.Size(), want(p))
			}
			if r.Contains(p.Addr()) {
				t.Errorf("band of %s contains the network address", p)
			}
		})
	}
}

func TestIPSet(t *testing.T) {
	type op struct {
		add    bool
		ranges string
	}
	tests := map[string]struct {
		fam  corev1.IPFamily
		ops  []op
		want []string // resulting intervals in order
	}{
		"IPv4 adjacent adds coalesce":  {v4, []op{{true, "10.0.0.1"}, {true, "10.0.0.3"}, {true, "10.0.0.2"}}, []string{"10.0.0.1-10.0.0.3"}},
		"IPv4 overlapping adds merge":  {v4, []op{{true, "10.0.0.1-10.0.0.5"}, {true, "10.0.0.4-10.0.0.9"}, {true, "10.0.0.20"}}, []string{"10.0.0.1-10.0.0.9", "10.0.0.20"}},
		"IPv4 add spanning many":       {v4, []op{{true, "10.0.0.1"}, {true, "10.0.0.5"}, {true, "10.0.0.9"}, {true, "10.0.0.0-10.0.0.10"}}, []string{"10.0.0.0-10.0.0.10"}},
		"IPv4 remove splits":           {v4, []op{{true, "10.0.0.0/29"}, {false, "10.0.0.3"}}, []string{"10.0.0.0-10.0.0.2", "10.0.0.4-10.0.0.7"}},
		"IPv4 remove across intervals": {v4, []op{{true, "10.0.0.1-10.0.0.3"}, {true, "10.0.0.7-10.0.0.9"}, {false, "10.0.0.2-10.0.0.8"}}, []string{"10.0.0.1", "10.0.0.9"}},
		"IPv4 whole space":             {v4, []op{{true, "0.0.0.0/0"}, {false, "0.0.0.0"}, {false, "255.255.255.255"}}, []string{"0.0.0.1-255.255.255.254"}},
		"IPv6 /64 minus one address":   {v6, []op{{true, "fd00::/64"}, {false, "fd00::5"}}, []string{"fd00::-fd00::4", "fd00::6-fd00::ffff:ffff:ffff:ffff"}},
		"IPv6 coalesce across 64 bits": {v6, []op{{true, "fd00::ffff:ffff:ffff:ffff"}, {true, "fd00:0:0:1::"}}, []string{"fd00::ffff:ffff:ffff:ffff-fd00:0:0:1::"}},
		"IPv6 top of space":            {v6, []op{{true, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}, {true, "::"}}, []string{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		"IPv6 remove absent is no-op":  {v6, []op{{true, "fd00::1"}, {false, "fd00::2"}}, []string{"fd00::1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var s IPSet
			for _, o := range tc.ops {
				r, err := ParseRange(o.ranges)
				if err != nil {
					t.Fatal(err)
				}
				if o.add {
					s.AddRange(r)
				} else {
					s.RemoveRange(r)
				}
			}
			got := s.Ranges(tc.fam)
			if len(got) != len(tc.want) {
				t.Fatalf("intervals = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].String() != tc.want[i] {
					t.Errorf("interval %d = %s, want %s", i, got[i], tc.want[i])
				}
			}
			other := v6
			if tc.fam == v6 {
				other = v4
			}
			if !s.Empty(other) {
				t.Errorf("the other family is not empty: %v", s.Ranges(other))
			}
		})
	}
}

func TestIPSetContainsAndOverlap(t *testing.T) {
	var a, b IPSet
	for _, r := range []string{"10.96.0.10-10.96.0.20", "fd00::10-fd00::20"} {
		x, _ := ParseRange(r)
		a.AddRange(x)
	}
	for s, want := range map[string]bool{"10.96.0.10": true, "10.96.0.20": true, "10.96.0.21": false, "10.96.0.9": false, "fd00::15": true, "fd00::21": false, "::ffff:10.96.0.15": false} {
		if got := a.Contains(ip(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	tests := map[string]struct {
		add  string
		want string
	}{
		"IPv4 touching end overlaps": {"10.96.0.20-10.96.0.30", "10.96.0.20"},
		"IPv4 adjacent is disjoint":  {"10.96.0.21-10.96.0.30", ""},
		"IPv6 inside overlaps":       {"fd00::18", "fd00::18"},
		"IPv6 adjacent is disjoint":  {"fd00::21", ""},
		"same numbers other family":  {"::a:60:14", ""}, // 10.96.0.20's bits as IPv6
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b = IPSet{}
			x, _ := ParseRange(tc.add)
			b.AddRange(x)
			got, ok := a.Overlap(&b)
			if tc.want == "" {
				if ok {
					t.Errorf("Overlap = %s, want none", got)
				}
				return
			}
			if !ok || got != ip(tc.want) {
				t.Errorf("Overlap = %s (%v), want %s", got, ok, tc.want)
			}
			if g2, _ := b.Overlap(&a); g2 != got {
				t.Errorf("Overlap not symmetric: %s vs %s", got, g2)
			}
		})
	}
}

// TestIPSetAgainstMap: random adds and removes of ranges agree with a plain
// map of addresses, and the intervals stay sorted, disjoint and
// non-adjacent (coalesced), in both families.
func TestIPSetAgainstMap(t *testing.T) {
	for name, base := range map[string]string{"IPv4": "10.96.0.0", "IPv6": "fd00::ffff:ffff:ffff:ff00"} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			universe := make([]netip.Addr, 512)
			universe[0] = ip(base)
			for i := 1; i < len(universe); i++ {
				universe[i] = universe[i-1].Next()
			}
			var s IPSet
			in := map[netip.Addr]bool{}
			for step := range 3000 {
				i := rng.IntN(len(universe))
				j := min(len(universe)-1, i+rng.IntN(12))
				r := Range{universe[i], universe[j]}
				add := rng.IntN(3) > 0
				if add {
					s.AddRange(r)
				} else {
					s.RemoveRange(r)
				}
				for k := i; k <= j; k++ {
					in[universe[k]] = add
				}
				if step%100 != 0 {
					continue
				}
				for _, a := range universe {
					if s.Contains(a) != in[a] {
						t.Fatalf("step %d: Contains(%s) = %v, map says %v", step, a, !in[a], in[a])
					}
				}
				rs := s.Ranges(FamilyOf(universe[0]))
				for k := 1; k < len(rs); k++ {
					if rs[k].From.Compare(rs[k-1].To.Next()) <= 0 {
						t.Fatalf("step %d: intervals %s and %s overlap or touch", step, rs[k-1], rs[k])
					}
				}
			}
		})
	}
}
