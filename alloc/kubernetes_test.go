package alloc

import (
	"net/netip"
	"testing"
)

func TestKubernetesServiceHolder(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tests := map[string]struct {
		cidrs      []netip.Prefix
		held, free []netip.Addr
	}{
		"IPv4":      {[]netip.Prefix{p("10.96.0.0/16")}, []netip.Addr{a("10.96.0.1")}, []netip.Addr{a("10.96.0.0"), a("10.96.0.2")}},
		"IPv6":      {[]netip.Prefix{p("fd00:10:96::/108")}, []netip.Addr{a("fd00:10:96::1")}, []netip.Addr{a("fd00:10:96::2")}},
		"IPv4,IPv6": {[]netip.Prefix{p("10.96.0.0/16"), p("fd00:10:96::/108")}, []netip.Addr{a("10.96.0.1")}, []netip.Addr{a("fd00:10:96::1")}},
		"IPv6,IPv4": {[]netip.Prefix{p("fd00:10:96::/108"), p("10.96.0.0/16")}, []netip.Addr{a("fd00:10:96::1")}, []netip.Addr{a("10.96.0.1")}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := KubernetesServiceHolder(tc.cidrs)
			for _, ip := range tc.held {
				if owner, ok := h(ip); !ok || owner != "default/kubernetes" {
					t.Errorf("%s: held=%v owner=%q, want default/kubernetes", ip, ok, owner)
				}
			}
			for _, ip := range tc.free {
				if _, ok := h(ip); ok {
					t.Errorf("%s: held, want free", ip)
				}
			}
		})
	}
	if KubernetesServiceHolder(nil) != nil {
		t.Error("no CIDRs: want no holder")
	}
}
