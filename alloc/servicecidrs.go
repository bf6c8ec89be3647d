package alloc

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseServiceCIDRs parses a comma-separated list of one or two service
// CIDRs, primary first, with the rules of kube-apiserver's
// --service-cluster-ip-range: two CIDRs must be of different families, and
// each must be a network address (10.96.0.0/16, not 10.96.0.1/16) so that a
// typo is not silently reinterpreted. `serve` and `convert` share it so that
// one flag value means the same cluster to both.
func ParseServiceCIDRs(s string) ([]netip.Prefix, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: at most two CIDRs (one per family), got %d", s, len(parts))
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, part := range parts {
		part = strings.TrimSpace(part)
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", part, err)
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%q: IPv4-mapped or zoned addresses are not service CIDRs", part)
		}
		if m := p.Masked(); m != p {
			return nil, fmt.Errorf("%q is not a network address (did you mean %s?)", part, m)
		}
		out = append(out, p)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, fmt.Errorf("%q: two CIDRs of the same family (%s): they must be one IPv4 and one IPv6",
			s, FamilyOf(out[0].Addr()))
	}
	return out, nil
}
