package alloc

import (
	"net/netip"
	"testing"
)

// FuzzParseRange: never panics; whatever parses is ordered, single-family,
// and prints back to itself.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"10.96.0.0/28", "10.96.0.1-10.96.0.9", "fd00::/64", "fd00::1-fd00::2", "::ffff:1.2.3.4", "1.2.3.4-::1", "fe80::1%eth0", "10.0.0.5/24", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if r.From.Is4() != r.To.Is4() || r.To.Less(r.From) {
			t.Fatalf("ParseRange(%q) = %s: mixed or backwards", s, r)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q).String() = %q re-parses to %s, %v", s, r.String(), back, err)
		}
	})
}

// FuzzCompile: arbitrary pool documents never panic, and every accepted
// document has pools that do not overlap and lie inside the ServiceCIDRs.
func FuzzCompile(f *testing.F) {
	f.Add([]byte(head + "defaultPool: a\npools:\n- name: a\n  addresses: {ipv4: [10.96.0.10-10.96.0.20], ipv6: [\"fd00:10:96::/120\"]}\n  exclude: [\"fd00:10:96::\"]\n"))
	f.Add([]byte(head + "pools:\n- name: a\n  strategy: hash\n  namespaceSelector: {matchLabels: {a: b}}\n  addresses: {ipv4: [10.96.0.10]}\n- name: b\n  addresses: {ipv4: [10.96.0.11]}\n"))
	f.Add([]byte(head))
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := ParseConfig(doc)
		if err != nil {
			return
		}
		p, err := Compile(c, cidrs)
		if err != nil {
			return
		}
		for i, a := range p.List {
			for _, b := range p.List[i+1:] {
				if ip, ok := a.Addresses.Overlap(b.Addresses); ok {
					t.Fatalf("accepted overlapping pools %q and %q at %s", a.Name, b.Name, ip)
				}
			}
			for _, fam := range []string{"IPv4", "IPv6"} {
				for _, r := range a.Addresses.Ranges(FamilyOf(netip.MustParseAddr(map[string]string{"IPv4": "1.1.1.1", "IPv6": "::1"}[fam]))) {
					if !p.InServiceCIDR(r.From) || !p.InServiceCIDR(r.To) {
						t.Fatalf("accepted pool %q range %s outside the ServiceCIDRs", a.Name, r)
					}
				}
			}
		}
		_, _ = p.Select(Subject{Namespace: "ns", Name: "svc", NamespaceLabels: map[string]string{"a": "b"}, Labels: map[string]string{"a": "b"}}, map[string]string{PoolAnnotation: "x"})
	})
}
