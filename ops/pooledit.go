package ops

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// PoolEdit is a change of the pool document, expressed so that applying it
// twice gives the same document as applying it once: a re-run of apply
// recomputes nothing and writes nothing when it already took effect.
type PoolEdit struct {
	// Materialize, when the document defines no pool, first writes the
	// implicit static-band pool explicitly (same addresses, default pool),
	// so that adding a pool does not silently drop it and orphan its
	// reservations.
	Materialize *alloc.PoolSpec `json:"materialize,omitempty"`
	// Pool receives Add; it is created (active, lowest) when absent.
	Pool string `json:"pool,omitempty"`
	// Add are entries appended to Pool unless already listed.
	Add alloc.FamilyAddresses `json:"add,omitempty"`
	// Drain lists pools to mark draining.
	Drain []string `json:"drain,omitempty"`
	// DefaultPool, when set, becomes the document's defaultPool.
	DefaultPool string `json:"defaultPool,omitempty"`
	// RemoveWithin drops every address and exclude entry lying wholly
	// inside this prefix, and every pool left without addresses.
	RemoveWithin string `json:"removeWithin,omitempty"`
	// RemoveFamily drops every address and exclude entry of this family, and
	// every pool left without addresses (dual-to-single).
	RemoveFamily corev1.IPFamily `json:"removeFamily,omitempty"`
}

// ApplyTo returns the document after the edit (cur is not modified) and
// whether anything changed.
func (e *PoolEdit) ApplyTo(cur *alloc.PoolConfig) (*alloc.PoolConfig, bool, error) {
	next := &alloc.PoolConfig{}
	if cur != nil {
		// A deep copy through JSON: the document is small and this keeps
		// selectors and slices independent of cur.
		b, err := json.Marshal(cur)
		if err != nil {
			return nil, false, err
		}
		if err := json.Unmarshal(b, next); err != nil {
			return nil, false, err
		}
	}
	next.APIVersion, next.Kind = alloc.ConfigAPIVersion, alloc.ConfigKind
	changed := false
	if e.Materialize != nil && len(next.Pools) == 0 {
		next.Pools = append(next.Pools, *e.Materialize)
		if next.DefaultPool == "" {
			next.DefaultPool = e.Materialize.Name
		}
		changed = true
	}
	if e.Pool != "" && (len(e.Add.IPv4) > 0 || len(e.Add.IPv6) > 0) {
		i := slices.IndexFunc(next.Pools, func(p alloc.PoolSpec) bool { return p.Name == e.Pool })
		if i < 0 {
			next.Pools = append(next.Pools, alloc.PoolSpec{Name: e.Pool})
			i = len(next.Pools) - 1
			changed = true
		}
		p := &next.Pools[i]
		for _, a := range e.Add.IPv4 {
			if !slices.Contains(p.Addresses.IPv4, a) {
				p.Addresses.IPv4 = append(p.Addresses.IPv4, a)
				changed = true
			}
		}
		for _, a := range e.Add.IPv6 {
			if !slices.Contains(p.Addresses.IPv6, a) {
				p.Addresses.IPv6 = append(p.Addresses.IPv6, a)
				changed = true
			}
		}
	}
	for _, d := range e.Drain {
		i := slices.IndexFunc(next.Pools, func(p alloc.PoolSpec) bool { return p.Name == d })
		if i < 0 {
			return nil, false, fmt.Errorf("pool %q to drain does not exist", d)
		}
		if next.Pools[i].State != alloc.PoolDraining {
			next.Pools[i].State = alloc.PoolDraining
			changed = true
		}
	}
	if e.RemoveWithin != "" {
		within, err := netip.ParsePrefix(e.RemoveWithin)
		if err != nil {
			return nil, false, fmt.Errorf("removeWithin: %w", err)
		}
		if dropEntries(next, func(r alloc.Range) bool { return within.Contains(r.From) && within.Contains(r.To) }) {
			changed = true
		}
	}
	if e.RemoveFamily != "" {
		if dropEntries(next, func(r alloc.Range) bool { return alloc.FamilyOf(r.From) == e.RemoveFamily }) {
			changed = true
		}
	}
	if e.DefaultPool != "" && next.DefaultPool != e.DefaultPool {
		next.DefaultPool = e.DefaultPool
		changed = true
	}
	return next, changed, nil
}

// dropEntries removes the address and exclude entries for which drop is true,
// and the pools left without addresses (clearing defaultPool when it names
// one of them). Unparsable entries are kept: Compile reports them.
func dropEntries(c *alloc.PoolConfig, drop func(alloc.Range) bool) bool {
	pred := func(entry string) bool {
		r, err := alloc.ParseRange(entry)
		return err == nil && drop(r)
	}
	changed := false
	kept := c.Pools[:0]
	for _, p := range c.Pools {
		n := len(p.Addresses.IPv4) + len(p.Addresses.IPv6) + len(p.Exclude)
		p.Addresses.IPv4 = slices.DeleteFunc(p.Addresses.IPv4, pred)
		p.Addresses.IPv6 = slices.DeleteFunc(p.Addresses.IPv6, pred)
		p.Exclude = slices.DeleteFunc(p.Exclude, pred)
		if len(p.Addresses.IPv4)+len(p.Addresses.IPv6)+len(p.Exclude) != n {
			changed = true
		}
		if len(p.Addresses.IPv4)+len(p.Addresses.IPv6) == 0 {
			if c.DefaultPool == p.Name {
				c.DefaultPool = ""
			}
			changed = true
			continue
		}
		kept = append(kept, p)
	}
	c.Pools = kept
	return changed
}
