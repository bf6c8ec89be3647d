package grid

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// UpdateCell is one entry of the update grid: a Service created from Initial
// (stored as Stored), then PUT back with Change applied (the body sent is
// Request), and the answer to that PUT.
type UpdateCell struct {
	Cluster string  `json:"cluster"`
	Name    string  `json:"name"`
	From    string  `json:"from"`
	Initial Input   `json:"initial"`
	Stored  *Result `json:"stored"`
	Change  Change  `json:"change"`
	Request Input   `json:"request"`
	Result  *Result `json:"result,omitempty"`
	Error   *Error  `json:"error,omitempty"`
}

// Change says how the PUT body differs from the stored Service: "keep" leaves
// the stored value, "unset" removes it; otherwise the new value.
type Change struct {
	IPFamilyPolicy string `json:"ipFamilyPolicy"` // keep | unset | SingleStack | ...
	IPFamilies     string `json:"ipFamilies"`     // keep | unset | [IPv4] | [IPv4,IPv6] | ...
	ClusterIPs     string `json:"clusterIPs"`     // keep | first (drop all but clusterIPs[0]) | unset (clusterIP too)
}

// Starting points of the update grid (the ones a cluster shape cannot create,
// e.g. RequireDualStack on a single-stack cluster, are left out there).
var UpdateFroms = []string{"single", "single-secondary", "prefer-dual", "require-dual", "headless+selector", "headless-selector"}

// Change dimensions: 5 × 6 × 3 = 90 per starting point.
var (
	UpdatePolicies   = []string{"keep", "unset", "SingleStack", "PreferDualStack", "RequireDualStack"}
	UpdateFamilies   = []string{"keep", "unset", "[IPv4]", "[IPv6]", "[IPv4,IPv6]", "[IPv6,IPv4]"}
	UpdateClusterIPs = []string{"keep", "first", "unset"}
)

// updateBase is where initial Services' pinned addresses start (the create
// grid uses 256+).
const updateBase = 1024

// InitialInput renders a starting point on a cluster whose ranges are cidrs
// (primary first); n makes its addresses distinct. ok is false when the shape
// cannot create it.
func InitialInput(from string, cidrs []netip.Prefix, n uint64) (in Input, ok bool) {
	fam := func(p netip.Prefix) string {
		if p.Addr().Is4() {
			return "IPv4"
		}
		return "IPv6"
	}
	addr := func(p netip.Prefix) string { return ip(p, updateBase+n) }
	ptr := func(s string) *string { return &s }
	in = Input{Selector: true}
	primary := cidrs[0]
	switch from {
	case "single":
		in.ClusterIPs = []string{addr(primary)}
	case "single-secondary":
		if len(cidrs) < 2 {
			return in, false
		}
		in.IPFamilies = []string{fam(cidrs[1])}
		in.ClusterIPs = []string{addr(cidrs[1])}
	case "prefer-dual", "require-dual":
		in.IPFamilyPolicy = ptr("PreferDualStack")
		if from == "require-dual" {
			if len(cidrs) < 2 {
				return in, false
			}
			in.IPFamilyPolicy = ptr("RequireDualStack")
		}
		for _, p := range cidrs {
			in.ClusterIPs = append(in.ClusterIPs, addr(p))
		}
	case "headless+selector":
		in.ClusterIPs = []string{"None"}
	case "headless-selector":
		in.ClusterIPs = []string{"None"}
		in.Selector = false
	default:
		panic("unknown starting point " + from)
	}
	in.ClusterIP = in.ClusterIPs[0]
	return in, true
}

// UpdateChanges lists the 90 changes in a fixed order.
func UpdateChanges() []Change {
	var out []Change
	for _, ips := range UpdateClusterIPs {
		for _, p := range UpdatePolicies {
			for _, f := range UpdateFamilies {
				out = append(out, Change{IPFamilyPolicy: p, IPFamilies: f, ClusterIPs: ips})
			}
		}
	}
	return out
}

func (c Change) String() string {
	return fmt.Sprintf("policy=%s/families=%s/clusterIPs=%s", c.IPFamilyPolicy, c.IPFamilies, c.ClusterIPs)
}

// Apply changes a stored Service into the PUT body.
func (c Change) Apply(sv *corev1.Service) {
	switch c.IPFamilyPolicy {
	case "keep":
	case "unset":
		sv.Spec.IPFamilyPolicy = nil
	default:
		p := corev1.IPFamilyPolicy(c.IPFamilyPolicy)
		sv.Spec.IPFamilyPolicy = &p
	}
	switch c.IPFamilies {
	case "keep":
	case "unset":
		sv.Spec.IPFamilies = nil
	default:
		sv.Spec.IPFamilies = nil
		for _, f := range strings.Split(strings.Trim(c.IPFamilies, "[]"), ",") {
			sv.Spec.IPFamilies = append(sv.Spec.IPFamilies, corev1.IPFamily(f))
		}
	}
	switch c.ClusterIPs {
	case "keep":
	case "first":
		if len(sv.Spec.ClusterIPs) > 1 {
			sv.Spec.ClusterIPs = sv.Spec.ClusterIPs[:1]
		}
	case "unset":
		sv.Spec.ClusterIP, sv.Spec.ClusterIPs = "", nil
	}
}

// InputOf describes a Service's dual-stack fields as an Input.
func InputOf(sv *corev1.Service) Input {
	in := Input{ClusterIP: sv.Spec.ClusterIP, ClusterIPs: sv.Spec.ClusterIPs, Selector: len(sv.Spec.Selector) > 0}
	if sv.Spec.IPFamilyPolicy != nil {
		p := string(*sv.Spec.IPFamilyPolicy)
		in.IPFamilyPolicy = &p
	}
	for _, f := range sv.Spec.IPFamilies {
		in.IPFamilies = append(in.IPFamilies, string(f))
	}
	return in
}

// RecordUpdate fills the cell's Result or Error from the PUT's answer;
// clusterIPs beyond those sent are "allocated".
func (u *UpdateCell) RecordUpdate(got *corev1.Service, err error) {
	c := Cell{Input: u.Request}
	c.Record(got, err)
	u.Result, u.Error = c.Result, c.Error
}

// UpdateFile is the layout of update_grid.json.
type UpdateFile struct {
	Comment    string       `json:"comment"`
	Kubernetes string       `json:"kubernetes"`
	Clusters   []Cluster    `json:"clusters"`
	Cells      []UpdateCell `json:"cells"`
}
