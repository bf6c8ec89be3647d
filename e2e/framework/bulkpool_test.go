package framework

import (
	"net/netip"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// TestBulkPoolAgreesWithItsDocument: InBulkPool says yes exactly for the
// addresses the webhook compiles from BulkPoolsDoc, at both ends of each
// family's range and just outside them.
func TestBulkPoolAgreesWithItsDocument(t *testing.T) {
	cfg, err := alloc.ParseConfig([]byte(BulkPoolsDoc("bulk")))
	if err != nil {
		t.Fatal(err)
	}
	cidrs, err := alloc.ParseServiceCIDRs(DualStackCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	pools, err := alloc.Compile(cfg, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"10.96.15.255", "10.96.16.0", "10.96.20.7", "10.96.23.255", "10.96.24.0",
		"fd00:10:96::fff", "fd00:10:96::1000", "fd00:10:96::1234", "fd00:10:96::17ff", "fd00:10:96::1800",
	} {
		a := netip.MustParseAddr(s)
		if got, want := InBulkPool(a), pools.PoolOf(a) != nil; got != want {
			t.Errorf("InBulkPool(%s) = %v, the compiled document says %v", a, got, want)
		}
	}
}
