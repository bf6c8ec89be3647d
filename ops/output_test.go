package ops

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteTables(t *testing.T) {
	var b bytes.Buffer
	st := Status{
		ServiceCIDRs: []ServiceCIDRStatus{{Name: "kubernetes", CIDRs: []string{"10.96.0.0/16"}, Ready: "True"}},
		Pools:        []PoolStatus{{Name: "general", State: "active", Default: true, Families: []FamilyStatus{{Family: "IPv4", Size: "16", Reserved: 2, Bound: 2, Free: "14", LowestFree: "10.96.0.3", Ranges: []string{"10.96.0.1-10.96.0.16"}}}}},
		Outside:      []OutsideIP{{Namespace: "a", Name: "b", IP: "10.96.9.9", Family: "IPv4", InServiceCIDR: true}},
	}
	if err := WriteStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"general (default)", "10.96.0.3", "10.96.0.1-10.96.0.16", "a/b", "10.96.9.9"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("status table lacks %q:\n%s", s, b.String())
		}
	}
	b.Reset()
	kept := false
	p := &Plan{Scenario: ReplacePrimary, Steps: []Step{{Description: "create ServiceCIDR x"}},
		Services: []ServiceChange{
			{Namespace: "a", Name: "far", Change: Recreate, ClusterIPs: []string{"10.96.200.1"}, NewClusterIPs: []string{""}, OffsetKept: &kept, Note: "offset not kept"},
			{Namespace: "a", Name: "up", Change: Upgrade, ClusterIPs: []string{"10.96.0.5"}, IPFamilies: []string{"IPv4", "IPv6"}},
		}, Notes: []string{"by hand"}}
	if err := WritePlanTable(&b, p); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1. create ServiceCIDR x", "a/far", "(allocator chooses)", "+IPv6", "- by hand"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("plan table lacks %q:\n%s", s, b.String())
		}
	}
	if err := checkOutput("xml"); err == nil {
		t.Error("-o xml accepted")
	}
}
