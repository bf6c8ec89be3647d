package alloc

import (
	"net/netip"
	"slices"
)

// Index is the in-memory view both stores keep of the reservations: by
// address, by owner, and the set of taken addresses the strategies search.
// It is not safe for concurrent use; stores guard it with their own lock.
type Index struct {
	// byIP points at reservations nobody modifies: the ConfigMap store
	// shares the record its informer caches (PutShared) rather than
	// keeping a second copy of every reservation.
	byIP map[netip.Addr]*Reservation
	// byOwner: an owner holds one address, two when dual-stack; a slice
	// costs a fraction of a map per owner.
	byOwner map[string][]netip.Addr
	taken   IPSet
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byIP: map[netip.Addr]*Reservation{}, byOwner: map[string][]netip.Addr{}}
}

// Put records r, replacing any reservation of the same address.
func (x *Index) Put(r Reservation) { x.PutShared(&r) }

// PutShared records *r without copying it: the caller must never modify
// *r afterwards.
func (x *Index) PutShared(r *Reservation) {
	if old, ok := x.byIP[r.IP]; ok {
		x.unlinkOwner(*old)
	} else {
		x.taken.Add(r.IP)
	}
	x.byIP[r.IP] = r
	k := r.Owner.Key()
	x.byOwner[k] = append(x.byOwner[k], r.IP)
}

// Delete forgets the reservation of ip.
func (x *Index) Delete(ip netip.Addr) {
	old, ok := x.byIP[ip]
	if !ok {
		return
	}
	x.unlinkOwner(*old)
	delete(x.byIP, ip)
	x.taken.Remove(ip)
}

func (x *Index) unlinkOwner(r Reservation) {
	k := r.Owner.Key()
	ips := x.byOwner[k]
	if i := slices.Index(ips, r.IP); i >= 0 {
		ips = slices.Delete(ips, i, i+1)
	}
	if len(ips) == 0 {
		delete(x.byOwner, k)
	} else {
		x.byOwner[k] = ips
	}
}

// Shares reports whether the index holds r itself (not a copy) for r.IP.
func (x *Index) Shares(r *Reservation) bool { return x.byIP[r.IP] == r }

// Get returns the reservation of ip.
func (x *Index) Get(ip netip.Addr) (Reservation, bool) {
	if r, ok := x.byIP[ip]; ok {
		return *r, true
	}
	return Reservation{}, false
}

// ByOwner returns the reservations whose Owner.Key() is key, lowest
// address first.
func (x *Index) ByOwner(key string) []Reservation {
	ips := x.byOwner[key]
	out := make([]Reservation, 0, len(ips))
	for _, ip := range ips {
		out = append(out, *x.byIP[ip])
	}
	slices.SortFunc(out, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	return out
}

// List returns every reservation, lowest address first (IPv4 first).
func (x *Index) List() []Reservation {
	out := make([]Reservation, 0, len(x.byIP))
	for _, r := range x.byIP {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	return out
}

// ListShared returns every reservation, lowest address first, as the
// records the index holds (see PutShared): the caller must not modify them.
func (x *Index) ListShared() []*Reservation {
	out := make([]*Reservation, 0, len(x.byIP))
	for _, r := range x.byIP {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Reservation) int { return a.IP.Compare(b.IP) })
	return out
}

// Len is the number of reservations.
func (x *Index) Len() int { return len(x.byIP) }

// Taken is the set of reserved addresses. The caller must not modify it nor
// keep it past the lock that guards the index.
func (x *Index) Taken() *IPSet { return &x.taken }
