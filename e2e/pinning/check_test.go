package pinning

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// snapshot is what the multi-replica proof checks: every Service's
// addresses, the apiserver's IPAddress objects and the webhook's reservations.
type snapshot struct {
	// Services maps namespace/name to the Service's clusterIPs.
	Services map[string][]netip.Addr
	// IPAddresses maps an address to the namespace/name of its parentRef.
	IPAddresses map[netip.Addr]string
	// Reservations are the state ConfigMaps.
	Reservations []reservation
}

// inPool says whether an address belongs to the webhook's pools (addresses
// outside them are not the webhook's to record).
type inPool func(netip.Addr) bool

// findings are the invariants a snapshot breaks; empty means consistent.
type findings struct {
	// Duplicates: an address held by two Services (or twice by one).
	Duplicates []string
	// IPAddress: a Service address without an IPAddress object naming it,
	// or an IPAddress naming another Service.
	IPAddress []string
	// Unreserved: a pool address of a live Service without a reservation
	// bound to that Service (only when requireBound).
	Unreserved []string
	// Orphans: a reservation whose Service does not hold its address.
	Orphans []string
	// Malformed: a reservation whose ConfigMap name is not its address's.
	Malformed []string
}

func (f findings) empty() bool {
	return len(f.Duplicates)+len(f.IPAddress)+len(f.Unreserved)+len(f.Orphans)+len(f.Malformed) == 0
}

func (f findings) String() string {
	var b strings.Builder
	for _, part := range []struct {
		name string
		list []string
	}{{"duplicate addresses", f.Duplicates}, {"IPAddress mismatches", f.IPAddress}, {"unreserved pool addresses", f.Unreserved},
		{"orphan reservations", f.Orphans}, {"malformed reservations", f.Malformed}} {
		if len(part.list) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%d %s:", len(part.list), part.name)
		for i, s := range part.list {
			if i == 10 {
				fmt.Fprintf(&b, " … (%d more)", len(part.list)-10)
				break
			}
			b.WriteString(" [" + s + "]")
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// check verifies a snapshot: no address held twice, every Service address
// backed by the apiserver's IPAddress object for that Service, every
// reservation naming a Service that holds its address (sticky ones
// excepted: their Service was deleted on purpose) and, with requireBound,
// every pool address of a live Service reserved and bound to it.
func check(s snapshot, pool inPool, requireBound bool) findings {
	var f findings
	holder := map[netip.Addr]string{}
	keys := make([]string, 0, len(s.Services))
	for k := range s.Services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, ip := range s.Services[k] {
			if prev, ok := holder[ip]; ok {
				f.Duplicates = append(f.Duplicates, fmt.Sprintf("%s held by %s and %s", ip, prev, k))
				continue
			}
			holder[ip] = k
			switch parent, ok := s.IPAddresses[ip]; {
			case !ok:
				f.IPAddress = append(f.IPAddress, fmt.Sprintf("%s of %s has no IPAddress object", ip, k))
			case parent != k:
				f.IPAddress = append(f.IPAddress, fmt.Sprintf("%s of %s: IPAddress names %s", ip, k, parent))
			}
		}
	}
	reserved := map[netip.Addr]reservation{}
	for _, r := range s.Reservations {
		if want := configmap.Name(r.IP); r.CM != want {
			f.Malformed = append(f.Malformed, fmt.Sprintf("%s holds address %s (want name %s)", r.CM, r.IP, want))
			continue
		}
		reserved[r.IP] = r
		if r.State == "sticky" {
			continue
		}
		if h, ok := holder[r.IP]; !ok || h != r.owner() {
			f.Orphans = append(f.Orphans, fmt.Sprintf("%s, but the address is held by %q", r, h))
		}
	}
	if requireBound {
		for _, k := range keys {
			for _, ip := range s.Services[k] {
				if !pool(ip) {
					continue
				}
				r, ok := reserved[ip]
				if !ok {
					f.Unreserved = append(f.Unreserved, fmt.Sprintf("%s of %s has no reservation", ip, k))
				} else if r.State != "bound" || r.owner() != k {
					f.Unreserved = append(f.Unreserved, fmt.Sprintf("%s of %s: %s", ip, k, r))
				}
			}
		}
	}
	return f
}

// takeSnapshot reads every Service, IPAddress and reservation of stateNS.
func takeSnapshot(ctx context.Context, c kubernetes.Interface, stateNS string) (snapshot, error) {
	s := snapshot{Services: map[string][]netip.Addr{}, IPAddresses: map[netip.Addr]string{}}
	svcs, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	for _, sv := range svcs.Items {
		k := sv.Namespace + "/" + sv.Name
		for _, ip := range sv.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.Services[k] = append(s.Services[k], a)
			}
		}
	}
	ips, err := c.NetworkingV1().IPAddresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	for _, ip := range ips.Items {
		a, err := netip.ParseAddr(ip.Name)
		if err != nil {
			continue
		}
		parent := ""
		if p := ip.Spec.ParentRef; p != nil {
			parent = p.Namespace + "/" + p.Name
		}
		s.IPAddresses[a] = parent
	}
	s.Reservations, err = reservations(ctx, c, stateNS)
	return s, err
}

// TestCheckerFlags proves the checker can fail: a clean snapshot passes and
// each kind of synthetic corruption (duplicate address, missing or foreign
// IPAddress, unreserved or wrongly reserved pool address, orphan and
// misnamed reservation) is reported. Needs no cluster.
func TestCheckerFlags(t *testing.T) {
	a := netip.MustParseAddr
	pool := func(ip netip.Addr) bool { return band4.contains(ip) || band6.contains(ip) }
	clean := func() snapshot {
		return snapshot{
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
			Reservations: []reservation{
				{CM: "ip-10-96-0-1", IP: a("10.96.0.1"), State: "bound", Namespace: "default", Name: "kubernetes"},
				{CM: "ip-10-96-0-2", IP: a("10.96.0.2"), State: "bound", Namespace: "ns", Name: "a"},
				{CM: "ip-fd00-10-96--2", IP: a("fd00:10:96::2"), State: "bound", Namespace: "ns", Name: "a"},
				{CM: "ip-10-96-0-3", IP: a("10.96.0.3"), State: "bound", Namespace: "ns", Name: "b"},
				{CM: "ip-10-96-0-9", IP: a("10.96.0.9"), State: "sticky", Namespace: "ns", Name: "gone"},
			},
		}
	}
	if f := check(clean(), pool, true); !f.empty() {
		t.Fatalf("clean snapshot flagged: %s", f)
	}
	corrupt := []struct {
		name string
		mut  func(*snapshot)
		got  func(findings) []string
	}{
		{"duplicate across Services", func(s *snapshot) { s.Services["ns/c"] = []netip.Addr{a("10.96.0.3")} }, func(f findings) []string { return f.Duplicates }},
		{"duplicate within a Service", func(s *snapshot) { s.Services["ns/b"] = []netip.Addr{a("10.96.0.3"), a("10.96.0.3")} }, func(f findings) []string { return f.Duplicates }},
		{"no IPAddress", func(s *snapshot) { delete(s.IPAddresses, a("10.96.0.3")) }, func(f findings) []string { return f.IPAddress }},
		{"foreign IPAddress", func(s *snapshot) { s.IPAddresses[a("10.96.0.3")] = "ns/a" }, func(f findings) []string { return f.IPAddress }},
		{"unreserved", func(s *snapshot) { s.Reservations = s.Reservations[:3] }, func(f findings) []string { return f.Unreserved }},
		{"pending, not bound", func(s *snapshot) { s.Reservations[3].State = "pending" }, func(f findings) []string { return f.Unreserved }},
		{"orphan", func(s *snapshot) {
			s.Reservations = append(s.Reservations, reservation{CM: "ip-10-96-0-4", IP: a("10.96.0.4"), State: "pending", Namespace: "ns", Name: "never"})
		}, func(f findings) []string { return f.Orphans }},
		{"reserved to another Service", func(s *snapshot) { s.Reservations[3].Name = "a" }, func(f findings) []string { return f.Orphans }},
		{"misnamed", func(s *snapshot) { s.Reservations[3].CM = "ip-10-96-0-33" }, func(f findings) []string { return f.Malformed }},
	}
	for _, tc := range corrupt {
		s := clean()
		tc.mut(&s)
		f := check(s, pool, true)
		if len(tc.got(f)) == 0 {
			t.Errorf("%s: not flagged (findings: %s)", tc.name, f)
		}
	}
	// Without requireBound an unreserved address passes (state rebuilt later).
	s := clean()
	s.Reservations = s.Reservations[:3]
	if f := check(s, pool, false); !f.empty() {
		t.Errorf("requireBound=false flagged: %s", f)
	}
}
