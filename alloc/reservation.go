package alloc

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// State is a reservation's lifecycle stage.
//
//	Reserve ──▶ pending ──Confirm──▶ bound ──Release──▶ sticky ──(retention over, Collect)──▶ freed
//	              │  (Service never appeared: grace over, Collect) ──────────────────────────▶ freed
//	              ◀──────── Reserve by the same namespace/name (re-create) ◀── sticky
type State string

const (
	// StatePending: reserved at admission; the Service may never be
	// persisted (CREATE has no UID, generateName has no name yet).
	StatePending State = "pending"
	// StateBound: a live Service with Owner.UID holds the address.
	StateBound State = "bound"
	// StateSticky: the Service is gone; the address stays reserved to its
	// namespace/name until Expires so that delete + re-create gets it back.
	StateSticky State = "sticky"
)

// Owner identifies who a reservation is for.
type Owner struct {
	Namespace string
	// Name is empty only for a pending reservation of a generateName
	// Service, which is then identified by GenerateName + RequestUID.
	Name         string
	GenerateName string
	// UID is the Service's UID once seen (bound).
	UID string
	// RequestUID is the admission request's UID while pending.
	RequestUID string
}

// Key is the owner index key: "ns/name", or for a nameless pending owner
// "ns/generateName*#requestUID" (unique per admission request, so a webhook
// re-invocation finds its own reservation).
func (o Owner) Key() string {
	if o.Name != "" {
		return o.Namespace + "/" + o.Name
	}
	return o.Namespace + "/" + o.GenerateName + "*#" + o.RequestUID
}

// String renders the owner for messages: "ns/name" or "ns/generateName*".
func (o Owner) String() string {
	if o.Name != "" {
		return o.Namespace + "/" + o.Name
	}
	return o.Namespace + "/" + o.GenerateName + "*"
}

// sameService reports whether a and b designate the same Service for the
// purposes of stickiness and idempotency.
func sameService(a, b Owner) bool {
	if a.Namespace != b.Namespace {
		return false
	}
	if a.Name != "" || b.Name != "" {
		return a.Name == b.Name
	}
	return a.GenerateName == b.GenerateName && a.RequestUID != "" && a.RequestUID == b.RequestUID
}

// Reservation is one reserved address. Stores persist every field.
type Reservation struct {
	IP netip.Addr
	// Pool is the pool the address belongs to ("" for a recorded request
	// outside every pool).
	Pool  string
	Owner Owner
	State State
	// Created and Updated are set by the Allocator's clock.
	Created, Updated time.Time
	// Expires is when a pending or sticky reservation may be collected;
	// zero for bound ones.
	Expires time.Time
	// Version is the store's opaque optimistic-concurrency token
	// (a resourceVersion for the configmap store). Set by the store.
	Version string
}

// Family is the reservation's IP family.
func (r Reservation) Family() corev1.IPFamily { return FamilyOf(r.IP) }

// Expired reports whether a pending or sticky reservation is past its
// deadline at now.
func (r Reservation) Expired(now time.Time) bool {
	return r.State != StateBound && !r.Expires.IsZero() && !now.Before(r.Expires)
}
