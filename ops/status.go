package ops

import (
	"math/big"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// Status is what `dualstack-webhook status` prints.
type Status struct {
	Namespace string `json:"namespace"`
	// PoolsSource is where the pools come from: configmap,
	// applied-record (the ConfigMap is absent or unusable; the replicas
	// pin from the last document they applied) or static-band.
	PoolsSource string `json:"poolsSource"`
	// PoolsNote says why, or that the ConfigMap differs from what the
	// replicas last applied.
	PoolsNote    string              `json:"poolsNote,omitempty"`
	ServiceCIDRs []ServiceCIDRStatus `json:"serviceCIDRs"`
	Pools        []PoolStatus        `json:"pools"`
	// Outside lists Service addresses that lie in no pool: the apiserver
	// allocated them (or they were requested outside the pools), so the
	// webhook neither tracks nor protects them.
	Outside []OutsideIP `json:"outside"`
}

// ServiceCIDRStatus is one ServiceCIDR object.
type ServiceCIDRStatus struct {
	Name  string   `json:"name"`
	CIDRs []string `json:"cidrs"`
	// Ready is the object's Ready condition ("True", "False", "" if unset).
	Ready string `json:"ready"`
	// Terminating is true once deletion was requested: the apiserver hands
	// out no new address from it.
	Terminating bool `json:"terminating,omitempty"`
}

// PoolStatus is one pool.
type PoolStatus struct {
	Name     string         `json:"name"`
	State    string         `json:"state"`
	Strategy string         `json:"strategy"`
	Default  bool           `json:"default,omitempty"`
	Families []FamilyStatus `json:"families"`
}

// FamilyStatus counts one family of one pool. Sizes are decimal strings
// because an IPv6 pool may hold 2^64 addresses.
type FamilyStatus struct {
	Family string   `json:"family"`
	Ranges []string `json:"ranges"`
	Size   string   `json:"size"`
	// Reserved = Pending + Bound + Sticky: addresses with a reservation.
	Reserved int `json:"reserved"`
	Pending  int `json:"pending"`
	Bound    int `json:"bound"`
	Sticky   int `json:"sticky"`
	// Unrecorded counts live Services holding an address of the pool that
	// has no reservation (pins the reconciler has not imported yet, or
	// addresses the apiserver gave out itself): not free either.
	Unrecorded int    `json:"unrecorded"`
	Free       string `json:"free"`
	// LowestFree is the lowest address nothing holds ("" when none): what
	// the lowest strategy would hand out next.
	LowestFree string `json:"lowestFree"`
}

// OutsideIP is one Service address outside every pool.
type OutsideIP struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	IP        string `json:"ip"`
	Family    string `json:"family"`
	// InServiceCIDR is false for an address no ServiceCIDR contains any
	// more (a range was removed under it).
	InServiceCIDR bool `json:"inServiceCIDR"`
}

// ComputeStatus is the pure part of status: per pool and family the counts
// of reservations by state, live holders without a reservation, free
// addresses and the lowest free one; plus every Service address outside all
// pools. Families are listed in the order of pools.CIDRs (primary first).
func ComputeStatus(pools *alloc.Pools, rs []alloc.Reservation, svcs []corev1.Service) Status {
	var st Status
	if pools == nil {
		return st
	}
	var fams []corev1.IPFamily
	for _, p := range pools.CIDRs {
		if f := alloc.FamilyOf(p.Addr()); !slices.Contains(fams, f) {
			fams = append(fams, f)
		}
	}
	for _, f := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		if !slices.Contains(fams, f) {
			fams = append(fams, f) // a pool may hold a family no CIDR lists first
		}
	}
	taken := &alloc.IPSet{}
	for _, r := range rs {
		taken.Add(r.IP)
	}
	// Live holders, keyed by address; the first Service wins (two Services
	// never share an address in a consistent cluster).
	live := map[netip.Addr]*corev1.Service{}
	for i := range svcs {
		svc := &svcs[i]
		for _, ip := range clusterIPs(svc) {
			if _, dup := live[ip]; !dup {
				live[ip] = svc
			}
			if pools.PoolOf(ip) == nil {
				st.Outside = append(st.Outside, OutsideIP{
					Namespace: svc.Namespace, Name: svc.Name, IP: ip.String(),
					Family: string(alloc.FamilyOf(ip)), InServiceCIDR: pools.InServiceCIDR(ip),
				})
			}
		}
	}
	skip := func(a netip.Addr) bool { _, ok := live[a]; return ok }
	for _, p := range pools.List {
		ps := PoolStatus{Name: p.Name, State: string(p.State), Strategy: string(p.Strategy), Default: pools.Default == p}
		for _, f := range fams {
			if !p.Has(f) {
				continue
			}
			fs := FamilyStatus{Family: string(f)}
			for _, r := range p.Addresses.Ranges(f) {
				fs.Ranges = append(fs.Ranges, r.String())
			}
			size := p.Addresses.Size(f)
			fs.Size = size.String()
			for _, r := range rs {
				if alloc.FamilyOf(r.IP) != f || !p.Addresses.Contains(r.IP) {
					continue
				}
				fs.Reserved++
				switch r.State {
				case alloc.StatePending:
					fs.Pending++
				case alloc.StateBound:
					fs.Bound++
				case alloc.StateSticky:
					fs.Sticky++
				}
			}
			for ip := range live {
				if alloc.FamilyOf(ip) == f && p.Addresses.Contains(ip) && !taken.Contains(ip) {
					fs.Unrecorded++
				}
			}
			free := new(big.Int).Sub(size, big.NewInt(int64(fs.Reserved+fs.Unrecorded)))
			if free.Sign() < 0 {
				free.SetInt64(0)
			}
			fs.Free = free.String()
			if a, ok := alloc.Next(p.Addresses, f, taken, alloc.StrategyLowest, "", skip); ok {
				fs.LowestFree = a.String()
			}
			ps.Families = append(ps.Families, fs)
		}
		st.Pools = append(st.Pools, ps)
	}
	return st
}
