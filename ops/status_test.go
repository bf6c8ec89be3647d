package ops

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

func TestComputeStatus(t *testing.T) {
	const dualPools = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses:
    ipv4: ["10.96.0.16/28"]
    ipv6: ["fd00:10:96::100-fd00:10:96::1ff"]
  exclude: ["10.96.0.20"]
- name: drained
  state: draining
  addresses: {ipv4: ["10.96.0.40-10.96.0.49"]}
`
	cases := []struct {
		name  string
		cidrs []string
		doc   string
		rs    []alloc.Reservation
		svcs  []corev1.Service
		want  map[string][]FamilyStatus // pool → families (Ranges checked separately)
		out   []OutsideIP
	}{{
		name:  "IPv4 only, implicit static band",
		cidrs: []string{"10.96.0.0/24"}, // band: 10.96.0.1-10.96.0.16
		rs: []alloc.Reservation{
			res("10.96.0.1", "static-band", alloc.StateBound, "default", "kubernetes"),
			res("10.96.0.2", "static-band", alloc.StatePending, "a", "p"),
			res("10.96.0.4", "static-band", alloc.StateSticky, "a", "gone"),
		},
		svcs: []corev1.Service{
			svc("default", "kubernetes", v4, "10.96.0.1"),
			svc("a", "live-unrecorded", v4, "10.96.0.3"),
			svc("a", "dynamic", v4, "10.96.0.200"),
			svc("a", "headless", v4, "None"),
		},
		want: map[string][]FamilyStatus{"static-band": {{Family: "IPv4", Size: "16", Reserved: 3, Pending: 1, Bound: 1, Sticky: 1, Unrecorded: 1, Free: "12", LowestFree: "10.96.0.5"}}},
		out:  []OutsideIP{{Namespace: "a", Name: "dynamic", IP: "10.96.0.200", Family: "IPv4", InServiceCIDR: true}},
	}, {
		name:  "IPv6 only, implicit static band, an address outside every ServiceCIDR",
		cidrs: []string{"fd00:10:96::/108"}, // band: ::1-::100
		rs:    []alloc.Reservation{res("fd00:10:96::1", "static-band", alloc.StateBound, "default", "kubernetes")},
		svcs: []corev1.Service{
			svc("default", "kubernetes", v6, "fd00:10:96::1"),
			svc("b", "stray", v6, "fd00:99::5"),
		},
		want: map[string][]FamilyStatus{"static-band": {{Family: "IPv6", Size: "256", Reserved: 1, Bound: 1, Free: "255", LowestFree: "fd00:10:96::2"}}},
		out:  []OutsideIP{{Namespace: "b", Name: "stray", IP: "fd00:99::5", Family: "IPv6"}},
	}, {
		name:  "dual-stack IPv4 primary, explicit pools",
		cidrs: []string{"10.96.0.0/16", "fd00:10:96::/108"},
		doc:   dualPools,
		rs: []alloc.Reservation{
			res("10.96.0.16", "general", alloc.StateBound, "a", "x"),
			res("fd00:10:96::100", "general", alloc.StateBound, "a", "x"),
			res("10.96.0.40", "drained", alloc.StateBound, "a", "y"),
		},
		svcs: []corev1.Service{
			svc("a", "x", v4v6, "10.96.0.16", "fd00:10:96::100"),
			svc("a", "y", v4, "10.96.0.40"),
			svc("default", "kubernetes", v4, "10.96.0.1"),
		},
		want: map[string][]FamilyStatus{
			"general": {
				{Family: "IPv4", Size: "15", Reserved: 1, Bound: 1, Free: "14", LowestFree: "10.96.0.17"},
				{Family: "IPv6", Size: "256", Reserved: 1, Bound: 1, Free: "255", LowestFree: "fd00:10:96::101"},
			},
			"drained": {{Family: "IPv4", Size: "10", Reserved: 1, Bound: 1, Free: "9", LowestFree: "10.96.0.41"}},
		},
		out: []OutsideIP{{Namespace: "default", Name: "kubernetes", IP: "10.96.0.1", Family: "IPv4", InServiceCIDR: true}},
	}, {
		name:  "dual-stack IPv6 primary lists IPv6 first; a full family has no lowest free",
		cidrs: []string{"fd00:10:96::/108", "10.96.0.0/16"},
		doc: `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
pools:
- name: tiny
  addresses: {ipv4: ["10.96.0.5-10.96.0.6"], ipv6: ["fd00:10:96::5"]}
`,
		rs: []alloc.Reservation{
			res("10.96.0.5", "tiny", alloc.StateBound, "a", "x"),
			res("fd00:10:96::5", "tiny", alloc.StateSticky, "a", "x"),
		},
		svcs: []corev1.Service{svc("a", "x", v6v4, "fd00:10:96::9", "10.96.0.5"), svc("a", "z", v4, "10.96.0.6")},
		want: map[string][]FamilyStatus{"tiny": {
			{Family: "IPv6", Size: "1", Reserved: 1, Sticky: 1, Free: "0"},
			{Family: "IPv4", Size: "2", Reserved: 1, Bound: 1, Unrecorded: 1, Free: "0"},
		}},
		out: []OutsideIP{{Namespace: "a", Name: "x", IP: "fd00:10:96::9", Family: "IPv6", InServiceCIDR: true}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var prefixes []netip.Prefix
			for _, c := range tc.cidrs {
				prefixes = append(prefixes, netip.MustParsePrefix(c))
			}
			pools, err := alloc.Compile(parseDoc(t, tc.doc), prefixes)
			if err != nil {
				t.Fatal(err)
			}
			st := ComputeStatus(pools, tc.rs, tc.svcs)
			if len(st.Pools) != len(tc.want) {
				t.Fatalf("pools: got %d, want %d: %+v", len(st.Pools), len(tc.want), st.Pools)
			}
			for _, p := range st.Pools {
				var fams []FamilyStatus
				for _, f := range p.Families {
					if len(f.Ranges) == 0 {
						t.Errorf("pool %s %s: no ranges", p.Name, f.Family)
					}
					f.Ranges = nil
					fams = append(fams, f)
				}
				if !reflect.DeepEqual(fams, tc.want[p.Name]) {
					t.Errorf("pool %s:\n got %+v\nwant %+v", p.Name, fams, tc.want[p.Name])
				}
			}
			if !reflect.DeepEqual(st.Outside, tc.out) {
				t.Errorf("outside:\n got %+v\nwant %+v", st.Outside, tc.out)
			}
		})
	}
}

func TestComputeStatusNilPools(t *testing.T) {
	if st := ComputeStatus(nil, nil, []corev1.Service{svc("a", "b", v4, "10.0.0.1")}); len(st.Pools)+len(st.Outside) != 0 {
		t.Fatalf("nil pools: %+v", st)
	}
}

// A pool left over a removed ServiceCIDR makes status fail with a pointer to
// the prune step rather than a bare compile error.
func TestStatusOfOrphanedPool(t *testing.T) {
	s := snapshot(t, `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
pools:
- name: gone
  addresses: {ipv4: ["10.97.0.1-10.97.0.16"]}
`, []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16")})
	_, err := StatusOf(s)
	if err == nil || !strings.Contains(err.Error(), "10.97.0.1 is outside every ServiceCIDR") || !strings.Contains(err.Error(), "apply replace-primary --old-cidr") {
		t.Fatalf("got %v", err)
	}
	s.Config = parseDoc(t, "")
	st, err := StatusOf(s)
	if err != nil || len(st.Pools) != 1 || st.ServiceCIDRs[0].Name != "kubernetes" {
		t.Fatalf("implicit pools: %+v %v", st, err)
	}
}
