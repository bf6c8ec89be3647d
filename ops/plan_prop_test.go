package ops

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestPlanProperties builds plans over random clusters: BuildPlan never
// panics, and a replace-primary plan never hands one address to two
// Services, never asks for an address outside the new range (for the
// replaced family) and never moves an address of the other family.
func TestPlanProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	old, nw := netip.MustParsePrefix("10.96.0.0/22"), netip.MustParsePrefix("10.100.0.0/23")
	for round := range 300 {
		var svcs []corev1.Service
		used := map[netip.Addr]bool{} // a consistent cluster never shares an address
		for i := range r.IntN(40) {
			a := netip.AddrFrom4([4]byte{10, 96, byte(r.IntN(5)), byte(r.IntN(256))}) // some outside /22
			b := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0, 0x96, 14: byte(r.IntN(2)), 15: byte(r.IntN(256))})
			if used[a] || used[b] {
				continue
			}
			used[a], used[b] = true, true
			switch r.IntN(5) {
			case 0:
				svcs = append(svcs, svc("a", fmt.Sprint("s", i), v4, a.String()))
			case 1:
				svcs = append(svcs, svc("a", fmt.Sprint("s", i), v4v6, a.String(), b.String()))
			case 2:
				svcs = append(svcs, svc("a", fmt.Sprint("s", i), v6v4, b.String(), a.String()))
			case 3:
				svcs = append(svcs, svc("b", fmt.Sprint("s", i), v6, b.String()))
			default:
				svcs = append(svcs, svc("c", fmt.Sprint("s", i), v4, "None"))
			}
		}
		// Addresses of the new range already taken by someone else.
		for i := range r.IntN(5) {
			a := netip.AddrFrom4([4]byte{10, 100, byte(r.IntN(2)), byte(r.IntN(256))})
			if !used[a] {
				used[a] = true
				svcs = append(svcs, svc("z", fmt.Sprint("taken", i), v4, a.String()))
			}
		}
		s := snapshot(t, "", []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/22", "fd00:10:96::/108")}, svcs...)
		for _, sc := range []Scenario{Extend, SingleToDual, DualToSingle, ReplacePrimary} {
			o := Options{CIDR: nw, Family: []corev1.IPFamily{"IPv4", "IPv6"}[r.IntN(2)], Selector: sel("")}
			if r.IntN(4) == 0 {
				o.CIDR = netip.MustParsePrefix("fd00:10:97::/120")
			}
			p, err := BuildPlan(s, sc, o)
			if err != nil || sc != ReplacePrimary || o.CIDR != nw {
				continue
			}
			seen := map[string]string{}
			for _, c := range p.Services {
				if c.Change != Recreate {
					continue
				}
				for i, ip := range c.NewClusterIPs {
					if ip == "" {
						continue
					}
					a := netip.MustParseAddr(ip)
					if prev, dup := seen[ip]; dup {
						t.Fatalf("round %d: %s handed to %s and %s", round, ip, prev, c.Key())
					}
					seen[ip] = c.Key()
					was := netip.MustParseAddr(c.ClusterIPs[i])
					if old.Contains(was) && !nw.Contains(a) || !old.Contains(was) && a != was {
						t.Fatalf("round %d: %s: %s -> %s", round, c.Key(), was, a)
					}
				}
			}
			for _, x := range svcs {
				if x.Namespace == "z" {
					if who, ok := seen[x.Spec.ClusterIP]; ok {
						t.Fatalf("round %d: %s, held by %s/%s, planned for %s", round, x.Spec.ClusterIP, x.Namespace, x.Name, who)
					}
				}
			}
		}
	}
}
