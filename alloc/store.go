package alloc

import (
	"context"
	"net/netip"
)

// Store persists reservations and nothing else: it never chooses an address.
// Implementations must be safe for concurrent use and must make Create
// atomic across every process sharing the state (that is what makes several
// webhook replicas safe). Every read must reflect every write this Store
// value has completed ("read your own writes"), even when reads come from a
// cache.
//
// The contract is executable: package alloc/storetest runs it against any
// implementation.
type Store interface {
	// Get returns the reservation of ip.
	Get(ctx context.Context, ip netip.Addr) (Reservation, bool, error)
	// ByOwner returns the reservations whose Owner.Key() equals key.
	ByOwner(ctx context.Context, key string) ([]Reservation, error)
	// List returns every reservation.
	List(ctx context.Context) ([]Reservation, error)
	// Taken calls fn with the set of reserved addresses. fn must neither
	// modify nor retain the set; it runs under the store's read lock, so
	// keep it short (the allocation decision is).
	Taken(ctx context.Context, fn func(taken *IPSet)) error
	// Create persists a new reservation and returns it with its Version.
	// If the address is already reserved it returns an error wrapping
	// ErrExists.
	Create(ctx context.Context, r Reservation) (Reservation, error)
	// Update replaces the reservation of r.IP if its current Version is
	// r.Version; otherwise ErrConflict (or ErrNotFound if it is gone).
	Update(ctx context.Context, r Reservation) (Reservation, error)
	// Delete removes the reservation of r.IP if its current Version is
	// r.Version; otherwise ErrConflict (or ErrNotFound if it is gone).
	Delete(ctx context.Context, r Reservation) error
}

// CandidateView is an optional Store capability for the allocation
// decision: the taken set as the store holds it right now, without waiting
// for the store's own completed writes to show (Taken waits). A candidate
// chosen on a lagging view is still safe, since Create arbitrates; the
// Allocator keeps its own recent writes and lost races aside until the view
// shows them, so that the lag costs no extra round trip.
type CandidateView interface {
	TakenNow(fn func(taken *IPSet)) error
}

// SharedLister is an optional Store capability for a full comparison of
// every reservation (the reconciler's): List without the copies, lowest
// address first. The records are the store's own; nobody may modify them.
// At 27,000 reservations a List is ~6 MiB of copies.
type SharedLister interface {
	ListShared(ctx context.Context) ([]*Reservation, error)
}

// LiveReader is implemented by a Store whose reads come from a cache: it
// reads one reservation from the source of truth. Before refusing a
// requested address as held by another owner, the allocator confirms the
// cached answer with it, since another replica's release (a downgrade
// freed, a pending reservation collected) reaches each cache with a delay,
// and the answer that refuses must not be older than the one that
// granted.
type LiveReader interface {
	GetLive(ctx context.Context, ip netip.Addr) (Reservation, bool, error)
}
