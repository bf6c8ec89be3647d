package alloc

import (
	"net/netip"
	"testing"
)

// TestIndexListShared: ListShared is List without copies: the same
// reservations in the same order (lowest address first, IPv4 first),
// each the record the index holds.
func TestIndexListShared(t *testing.T) {
	x := NewIndex()
	for _, ip := range []string{"fd00:10:96::2", "10.96.0.9", "fd00:10:96::1", "10.96.0.10", "10.96.0.2"} {
		x.Put(Reservation{IP: netip.MustParseAddr(ip), Pool: "p", Owner: Owner{Namespace: "demo", Name: ip}, State: StateBound})
	}
	x.Delete(netip.MustParseAddr("10.96.0.9"))
	copies, shared := x.List(), x.ListShared()
	if len(copies) != 4 || len(shared) != len(copies) {
		t.Fatalf("List %d, ListShared %d reservations; want 4 each", len(copies), len(shared))
	}
	for i, r := range shared {
		if *r != copies[i] {
			t.Errorf("ListShared[%d] = %s, List[%d] = %s", i, r.IP, i, copies[i].IP)
		}
		if !x.Shares(r) {
			t.Errorf("ListShared[%d] (%s) is a copy", i, r.IP)
		}
	}
	if shared[0].IP != netip.MustParseAddr("10.96.0.2") || shared[3].IP != netip.MustParseAddr("fd00:10:96::2") {
		t.Errorf("ListShared order %s … %s", shared[0].IP, shared[3].IP)
	}
}
