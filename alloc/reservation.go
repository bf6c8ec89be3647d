package alloc

import (
	"net/netip"
	"strings"
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
// "ns/generateName*#requestUID". The apiserver draws a new request UID for
// every webhook call, so the latter only finds a reservation within one
// call; a re-invocation carries the pinned IPs as requested addresses and is
// matched by mayUse instead.
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

// mayUse reports whether req may use an address reserved to cur, as a
// requested IP. Beyond sameService it accepts the webhook's own output for a
// generateName Service: kube-apiserver gives every webhook call a new
// request UID (CreateAdmissionObjects), and the name is only generated
// between the mutating and the validating webhooks, so neither the
// re-invocation nor /validate can match a pending reservation by UID or
// name. Namespace + generateName (+ the generated name's prefix) is the
// strongest link left, and the apiserver's IPAddress objects still keep the
// address unique if two such Services ever raced for it.
func mayUse(cur, req Owner) bool {
	if sameService(cur, req) {
		return true
	}
	return cur.Name == "" && cur.GenerateName != "" && cur.Namespace == req.Namespace &&
		req.GenerateName == cur.GenerateName && (req.Name == "" || strings.HasPrefix(req.Name, cur.GenerateName))
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
