package framework

import (
	"net/netip"
	"testing"
)

// TestCheckerFlags proves the checker can fail: a clean snapshot passes and
// each kind of synthetic corruption (duplicate address, missing or foreign
// IPAddress, unreserved or wrongly reserved pool address, orphan and
// misnamed reservation) is reported. Needs no cluster.
func TestCheckerFlags(t *testing.T) {
	a := netip.MustParseAddr
	in := func(ip netip.Addr, first, last string) bool {
		return ip.Compare(a(first)) >= 0 && ip.Compare(a(last)) <= 0
	}
	// The static bands of DualStackCIDRs.
	pool := func(ip netip.Addr) bool {
		return in(ip, "10.96.0.1", "10.96.1.0") || in(ip, "fd00:10:96::1", "fd00:10:96::100")
	}
	clean := func() Snapshot {
		return Snapshot{
			Services: map[string][]netip.Addr{
				"default/kubernetes": {a("10.96.0.1")},
				"ns/a":               {a("10.96.0.2"), a("fd00:10:96::2")},
				"ns/b":               {a("10.96.0.3")},
				"ns/dyn":             {a("10.96.77.1")}, // outside the pool: not the webhook's
			},
			IPAddresses: map[netip.Addr]string{
				a("10.96.0.1"): "default/kubernetes", a("10.96.0.2"): "ns/a", a("fd00:10:96::2"): "ns/a",
				a("10.96.0.3"): "ns/b", a("10.96.77.1"): "ns/dyn",
			},
			Reservations: []Reservation{
				{CM: "ip-10-96-0-1", IP: a("10.96.0.1"), State: "bound", Namespace: "default", Name: "kubernetes"},
				{CM: "ip-10-96-0-2", IP: a("10.96.0.2"), State: "bound", Namespace: "ns", Name: "a"},
				{CM: "ip-fd00-10-96--2", IP: a("fd00:10:96::2"), State: "bound", Namespace: "ns", Name: "a"},
				{CM: "ip-10-96-0-3", IP: a("10.96.0.3"), State: "bound", Namespace: "ns", Name: "b"},
				{CM: "ip-10-96-0-9", IP: a("10.96.0.9"), State: "sticky", Namespace: "ns", Name: "gone"},
			},
		}
	}
	if f := Check(clean(), pool, true); !f.Empty() {
		t.Fatalf("clean snapshot flagged: %s", f)
	}
	corrupt := []struct {
		name string
		mut  func(*Snapshot)
		got  func(Findings) []string
	}{
		{"duplicate across Services", func(s *Snapshot) { s.Services["ns/c"] = []netip.Addr{a("10.96.0.3")} }, func(f Findings) []string { return f.Duplicates }},
		{"duplicate within a Service", func(s *Snapshot) { s.Services["ns/b"] = []netip.Addr{a("10.96.0.3"), a("10.96.0.3")} }, func(f Findings) []string { return f.Duplicates }},
		{"no IPAddress", func(s *Snapshot) { delete(s.IPAddresses, a("10.96.0.3")) }, func(f Findings) []string { return f.IPAddress }},
		{"foreign IPAddress", func(s *Snapshot) { s.IPAddresses[a("10.96.0.3")] = "ns/a" }, func(f Findings) []string { return f.IPAddress }},
		{"unreserved", func(s *Snapshot) { s.Reservations = s.Reservations[:3] }, func(f Findings) []string { return f.Unreserved }},
		{"pending, not bound", func(s *Snapshot) { s.Reservations[3].State = "pending" }, func(f Findings) []string { return f.Unreserved }},
		{"orphan", func(s *Snapshot) {
			s.Reservations = append(s.Reservations, Reservation{CM: "ip-10-96-0-4", IP: a("10.96.0.4"), State: "pending", Namespace: "ns", Name: "never"})
		}, func(f Findings) []string { return f.Orphans }},
		{"reserved to another Service", func(s *Snapshot) { s.Reservations[3].Name = "a" }, func(f Findings) []string { return f.Orphans }},
		{"misnamed", func(s *Snapshot) { s.Reservations[3].CM = "ip-10-96-0-33" }, func(f Findings) []string { return f.Malformed }},
	}
	for _, tc := range corrupt {
		s := clean()
		tc.mut(&s)
		f := Check(s, pool, true)
		if len(tc.got(f)) == 0 {
			t.Errorf("%s: not flagged (findings: %s)", tc.name, f)
		}
	}
	// Without requireBound an unreserved address passes (state rebuilt later).
	s := clean()
	s.Reservations = s.Reservations[:3]
	if f := Check(s, pool, false); !f.Empty() {
		t.Errorf("requireBound=false flagged: %s", f)
	}
}
