package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
)

// Event reasons published on Services.
const (
	// ReasonPinned: a reservation made at admission (or a sticky one handed
	// back) is now bound to the live Service.
	ReasonPinned = "ClusterIPPinned"
	// ReasonImported: a live Service holds an address inside a pool that
	// had no reservation (created while the webhook was down or excluded,
	// or state rebuilt after the ConfigMaps were deleted).
	ReasonImported = "ReservationImported"
	// ReasonReleased: the Service is gone (address sticky to its name) or
	// no longer holds the address (downgrade, ExternalName), or a sticky
	// address's retention is over.
	ReasonReleased = "ReservationReleased"
	// ReasonTakenOver: an address reserved to one owner is held by another
	// live Service; the live one wins (the apiserver already allocated it).
	ReasonTakenOver = "ReservationTakenOver"
)

// Allocator is what the reconciler needs of *alloc.Allocator.
type Allocator interface {
	Pools() *alloc.Pools
	Confirm(ctx context.Context, ip netip.Addr, owner alloc.Owner) (alloc.Reservation, error)
	Release(ctx context.Context, ip netip.Addr, owner alloc.Owner) error
	Free(ctx context.Context, ip netip.Addr) error
	CollectWith(ctx context.Context, held alloc.HolderFunc) ([]alloc.Reservation, error)
}

var _ Allocator = (*alloc.Allocator)(nil)

// ReservationLister lists every reservation (alloc.Store's List).
type ReservationLister interface {
	List(ctx context.Context) ([]alloc.Reservation, error)
}

// DefaultInterval is the period of the full resync besides event-triggered
// ones: it bounds how long a missed event, an expired grace or a deleted
// state object goes unnoticed.
const DefaultInterval = 30 * time.Second

// minGap coalesces bursts of watch events (300 Service creates are 300
// events) into a few syncs: each sync is a full comparison anyway.
const minGap = 200 * time.Millisecond

// Options configure a Reconciler.
type Options struct {
	Log       *zap.Logger
	Allocator Allocator
	Store     ReservationLister
	// Services lists live Services of every namespace (informer cache).
	Services corev1listers.ServiceLister
	// GetService, when set, reads one Service from the apiserver. Before a
	// pending reservation past its grace is freed while the cache shows no
	// Service holding it, its owner is read live: on a loaded control
	// plane the cache can lag a create by more than the grace, and freeing
	// the address of a Service that holds it hands it to the next request,
	// which the apiserver then refuses ("already allocated").
	GetService func(ctx context.Context, namespace, name string) (*corev1.Service, error)
	// Synced reports whether every cache Sync reads has synced: a sync on
	// a half-filled Service cache would release live Services' addresses.
	Synced func() bool
	// Recorder publishes Events on Services; nil publishes none.
	Recorder record.EventRecorder
	// Metrics, when set, counts what Sync does.
	Metrics *Metrics
	// Clock schedules the next sync at the next expiry; it must be the
	// allocator's clock.
	Clock clock.Clock
	// Interval: see DefaultInterval.
	Interval time.Duration
}

// Reconciler compares live Services with the reservations and repairs the
// latter. Only one should run at a time (leader election); concurrent runs
// are still safe, since every write carries the version it read.
type Reconciler struct {
	o    Options
	kick chan struct{}
}

// New returns a Reconciler.
func New(o Options) (*Reconciler, error) {
	if o.Allocator == nil || o.Store == nil || o.Services == nil {
		return nil, errors.New("reconcile.New: Allocator, Store and Services are required")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Synced == nil {
		o.Synced = func() bool { return true }
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Recorder == nil {
		o.Recorder = &record.FakeRecorder{} // nil channel: discards
	}
	return &Reconciler{o: o, kick: make(chan struct{}, 1)}, nil
}

// Kick asks for a sync soon; it never blocks. Informer event handlers call
// it.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run syncs on every kick, every Interval and at the next expiry of a
// pending or sticky reservation, until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	r.o.Log.Info("reconciler started", zap.Duration("interval", r.o.Interval))
	defer r.o.Log.Info("reconciler stopped")
	for {
		wait := r.o.Interval
		if !r.o.Synced() {
			wait = time.Second
		} else {
			next, err := r.Sync(ctx)
			if err != nil && ctx.Err() == nil {
				r.o.Log.Error("reconcile failed; retrying", zap.Error(err))
				wait = min(wait, 5*time.Second)
			}
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(r.o.Clock.Now()), minGap))
			}
		}
		t := r.o.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-r.kick:
			t.Stop()
			// Let a burst of events land before the full comparison.
			gap := r.o.Clock.NewTimer(minGap)
			select {
			case <-ctx.Done():
				gap.Stop()
				return
			case <-gap.C():
			}
		}
	}
}

// Sync compares every live Service with every reservation once:
//
//  1. each address a live Service holds inside a pool is confirmed bound to
//     it (pending → bound, sticky → bound, none → imported; a reservation of
//     another owner is taken over, since the apiserver already allocated
//     the address to the live Service);
//  2. each bound reservation whose Service no longer holds the address is
//     released: sticky to its name if the Service is gone, freed if the
//     Service lives without it (downgrade, ExternalName, headless);
//  3. pending reservations past their grace and sticky ones past their
//     retention are collected.
//
// It returns the earliest expiry left (zero if none), so Run can wake up
// then.
func (r *Reconciler) Sync(ctx context.Context) (next time.Time, err error) {
	if !r.o.Synced() {
		return time.Time{}, errors.New("caches not synced")
	}
	// work counts what this sync repaired; with the failures it is the
	// backlog gauge (what a sync right now still had to do).
	work := 0
	var errs []error
	defer func() {
		if r.o.Metrics == nil {
			return
		}
		if err != nil {
			r.o.Metrics.ReconcileErrors.Inc()
		}
		r.o.Metrics.Syncs.Inc()
		backlog := work + len(errs)
		if err != nil && backlog == 0 {
			backlog = 1 // failed before it could see what there was to do
		}
		r.o.Metrics.Backlog.Set(float64(backlog))
	}()
	svcs, err := r.o.Services.List(labels.Everything())
	if err != nil {
		return time.Time{}, fmt.Errorf("listing Services: %w", err)
	}
	rs, err := r.o.Store.List(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing reservations: %w", err)
	}
	pools := r.o.Allocator.Pools()
	byIP := make(map[netip.Addr]alloc.Reservation, len(rs))
	for _, x := range rs {
		byIP[x.IP] = x
	}
	live := make(map[string]*corev1.Service, len(svcs))
	holder := make(map[netip.Addr]*corev1.Service)
	for _, s := range svcs {
		live[s.Namespace+"/"+s.Name] = s
		for _, ip := range heldIPs(s) {
			holder[ip] = s
		}
	}

	// 1. Confirm and import.
	ips := make([]netip.Addr, 0, len(holder))
	for ip := range holder {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		s := holder[ip]
		if pools.PoolOf(ip) == nil {
			continue // outside every pool: the apiserver's alone
		}
		owner := alloc.Owner{Namespace: s.Namespace, Name: s.Name, UID: string(s.UID)}
		cur, had := byIP[ip]
		if had && cur.State == alloc.StateBound && cur.Owner == owner {
			continue
		}
		saved, err := r.o.Allocator.Confirm(ctx, ip, owner)
		if err != nil {
			errs = append(errs, fmt.Errorf("confirming %s for %s/%s: %w", ip, s.Namespace, s.Name, err))
			continue
		}
		byIP[ip] = saved
		work++
		switch {
		case !had:
			r.count(func(m *Metrics) { m.Imported.Inc() })
			r.event(s, corev1.EventTypeNormal, ReasonImported, "clusterIP %s (pool %s) recorded: the Service holds it but the webhook had no reservation", ip, saved.Pool)
			r.o.Log.Info("reservation imported", zap.Stringer("ip", ip), zap.String("service", owner.String()))
		case sameName(cur.Owner, owner) || (cur.Owner.Name == "" && cur.Owner.Namespace == s.Namespace):
			r.event(s, corev1.EventTypeNormal, ReasonPinned, "clusterIP %s (pool %s) bound to the Service (was %s)", ip, saved.Pool, cur.State)
		default:
			r.count(func(m *Metrics) { m.Conflicts.Inc() })
			r.event(s, corev1.EventTypeWarning, ReasonTakenOver, "clusterIP %s was reserved to %s (%s); the Service holds it, so it is now recorded for the Service", ip, cur.Owner, cur.State)
		}
	}

	// 2. Release what no live Service holds any more.
	for _, x := range rs {
		if x.State != alloc.StateBound {
			continue
		}
		if _, held := holder[x.IP]; held {
			continue
		}
		if s, ok := live[x.Owner.Namespace+"/"+x.Owner.Name]; ok {
			// The Service (or a re-created one of that name) lives without
			// the address: downgraded, turned ExternalName or headless, or
			// re-created with other addresses. Nothing to stick to.
			// Unless the cache is behind: a downgrade followed at once by
			// an upgrade gets the same address back (the reservation is
			// still its own), and freeing it on the older view would hand
			// a held address to the next request.
			if _, held := r.serviceHolds(ctx, x.Owner.Namespace, x.Owner.Name, x.IP); held {
				continue
			}
			if err := r.o.Allocator.Free(ctx, x.IP); err != nil {
				errs = append(errs, fmt.Errorf("freeing %s of %s: %w", x.IP, x.Owner, err))
				continue
			}
			work++
			r.count(func(m *Metrics) { m.Collected.Inc() })
			r.event(s, corev1.EventTypeNormal, ReasonReleased, "clusterIP %s (pool %s) freed: the Service no longer holds it", x.IP, x.Pool)
			r.o.Log.Info("reservation freed: Service no longer holds it", zap.Stringer("ip", x.IP), zap.String("service", x.Owner.String()))
			continue
		}
		if err := r.o.Allocator.Release(ctx, x.IP, x.Owner); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s of %s: %w", x.IP, x.Owner, err))
			continue
		}
		work++
		r.event(gone(x.Owner), corev1.EventTypeNormal, ReasonReleased, "Service deleted: clusterIP %s (pool %s) stays reserved to %s for re-creation", x.IP, x.Pool, x.Owner)
		r.o.Log.Info("reservation sticky: Service deleted", zap.Stringer("ip", x.IP), zap.String("service", x.Owner.String()))
	}

	// 3. Collect expired pending and sticky reservations.
	// Only live Services keep an expired pending reservation (for Confirm
	// in the next pass); a leaked IPAddress object does not.
	liveHolder := func(ip netip.Addr) (string, bool) {
		if s, ok := holder[ip]; ok {
			return s.Namespace + "/" + s.Name, true
		}
		return r.ownerHolds(ctx, byIP[ip], ip)
	}
	freed, err := r.o.Allocator.CollectWith(ctx, liveHolder)
	work += len(freed)
	for _, x := range freed {
		r.count(func(m *Metrics) { m.Collected.Inc() })
		if x.State == alloc.StateSticky {
			r.event(gone(x.Owner), corev1.EventTypeNormal, ReasonReleased, "retention over: clusterIP %s (pool %s) returned to the pool", x.IP, x.Pool)
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("collecting: %w", err))
	}

	// The next expiry, read back after the writes above.
	if after, err := r.o.Store.List(ctx); err == nil {
		for _, x := range after {
			if x.State != alloc.StateBound && !x.Expires.IsZero() && (next.IsZero() || x.Expires.Before(next)) {
				next = x.Expires
			}
		}
	}
	return next, errors.Join(errs...)
}

// ownerHolds asks the apiserver whether the owner of a pending reservation
// holds ip (see Options.GetService). An answer other than "no such Service"
// or "it does not hold it" keeps the reservation for the next sync: an
// address is never freed on a guess.
func (r *Reconciler) ownerHolds(ctx context.Context, x alloc.Reservation, ip netip.Addr) (string, bool) {
	if r.o.GetService == nil || x.State != alloc.StatePending || x.Owner.Name == "" || x.IP != ip {
		return "", false
	}
	return r.serviceHolds(ctx, x.Owner.Namespace, x.Owner.Name, ip)
}

// serviceHolds reads the Service namespace/name from the apiserver (when
// Options.GetService is set) and reports whether it holds ip; a failed read
// counts as held, so nothing is freed on a guess.
func (r *Reconciler) serviceHolds(ctx context.Context, namespace, name string, ip netip.Addr) (string, bool) {
	if r.o.GetService == nil {
		return "", false
	}
	key := namespace + "/" + name
	s, err := r.o.GetService(ctx, namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		return "", false
	case err != nil:
		r.o.Log.Warn("live read of a reservation's Service failed; keeping the reservation", zap.Stringer("ip", ip), zap.String("service", key), zap.Error(err))
		return key, true
	}
	if slices.Contains(heldIPs(s), ip) {
		return key, true
	}
	return "", false
}

// heldIPs are the addresses a live Service holds as far as pinning is
// concerned: none for ExternalName and headless Services, and none for
// default/kubernetes, whose address the apiserver manages (it stays off
// limits through the IPAddress objects, alloc.Options.External).
func heldIPs(s *corev1.Service) []netip.Addr {
	if s.Spec.Type == corev1.ServiceTypeExternalName || (s.Namespace == "default" && s.Name == "kubernetes") {
		return nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, v := range ips {
		if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func sameName(a, b alloc.Owner) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Name != ""
}

// gone is the event target of a Service that no longer exists.
func gone(o alloc.Owner) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: o.Namespace, Name: o.Name, UID: types.UID(o.UID)}
}

func (r *Reconciler) event(obj runtime.Object, typ, reason, format string, args ...any) {
	r.o.Recorder.Eventf(obj, typ, reason, format, args...)
}

func (r *Reconciler) count(f func(*Metrics)) {
	if r.o.Metrics != nil {
		f(r.o.Metrics)
	}
}
