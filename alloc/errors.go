package alloc

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors. Callers test them with errors.Is; messages add the pool,
// family or address with %w. The webhook maps ErrFull, ErrDraining,
// ErrUnknownPool, *ErrPoolAccess, *ErrHeld and *ErrNotInServiceCIDR to a denial, and
// ErrNotReady and ErrContended to a 500 so that failurePolicy applies.
var (
	// ErrFull means the pool has no free address of the family.
	ErrFull = errors.New("pool is exhausted")
	// ErrDraining means the pool hands out nothing new.
	ErrDraining = errors.New("pool is draining: it hands out no new address")
	// ErrUnknownPool means a Service's pool annotation names no pool.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNotReady means the store cannot answer yet (cache not synced, or
	// it has not seen its own last write within the wait limit).
	ErrNotReady = errors.New("allocator state not ready")
	// ErrContended means every candidate tried was taken concurrently by
	// another writer; retrying the request is safe.
	ErrContended = errors.New("too many concurrent allocations, try again")

	// ErrExists is returned by Store.Create when the address is already
	// reserved (the apiserver's AlreadyExists).
	ErrExists = errors.New("reservation already exists")
	// ErrConflict is returned by Store.Update/Delete when the reservation
	// changed since it was read (the apiserver's Conflict).
	ErrConflict = errors.New("reservation changed concurrently")
	// ErrNotFound is returned by Store.Update/Delete when the reservation
	// is gone.
	ErrNotFound = errors.New("reservation not found")
)

// ErrHeld says an address is reserved by someone else. Its message carries
// "held by <namespace>/<name>" so that a denied user knows whom to ask.
type ErrHeld struct {
	IP netip.Addr
	// Owner is "namespace/name" (or "namespace/generateName* (pending)").
	Owner string
	// State is the holder's reservation state, or "live" when a Service or
	// IPAddress object outside our records holds it.
	State string
}

func (e *ErrHeld) Error() string {
	return fmt.Sprintf("IP %s is held by %s (%s)", e.IP, e.Owner, e.State)
}

// ErrNotInServiceCIDR says a requested address is outside every ServiceCIDR
// of the cluster, which the apiserver would refuse anyway.
type ErrNotInServiceCIDR struct {
	IP    netip.Addr
	CIDRs []netip.Prefix
}

func (e *ErrNotInServiceCIDR) Error() string {
	return fmt.Sprintf("IP %s is not inside any ServiceCIDR (%s)", e.IP, joinPrefixes(e.CIDRs))
}

// ErrPoolAccess says a restricted pool does not serve a Service: it named
// the pool in its annotation, or asked for one of the pool's addresses, from
// outside the pool's namespaces or serviceSelector.
type ErrPoolAccess struct {
	Pool string
	// Audience is Pool.Audience: whom the pool serves.
	Audience string
	// Subject is the Service, "namespace/name".
	Subject string
	// IP is the requested address; invalid when the pool was named in the
	// annotation.
	IP netip.Addr
}

func (e *ErrPoolAccess) Error() string {
	if e.IP.IsValid() {
		return fmt.Sprintf("IP %s belongs to pool %q, which serves only %s; %s is not one of them", e.IP, e.Pool, e.Audience, e.Subject)
	}
	return fmt.Sprintf("pool %q serves only %s; %s is not one of them", e.Pool, e.Audience, e.Subject)
}
