package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
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
	FreeUnchanged(ctx context.Context, r alloc.Reservation) (bool, error)
	CollectWith(ctx context.Context, keep alloc.KeepFunc) ([]alloc.Reservation, error)
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
	// GetService, when set, reads one Service from the apiserver. Before a
	// pending reservation past its grace is freed while the cache shows no
	// Service holding it, its owner is read live: on a loaded control
	// plane the cache can lag a create by more than the grace, and freeing
	// the address of a Service that holds it hands it to the next request,
	// which the apiserver then refuses ("already allocated").
	GetService func(ctx context.Context, namespace, name string) (*corev1.Service, error)
	// Workers: see DefaultWorkers.
	Workers int
}

// ReservationReader is what the per-Service sync reads of the store
// (alloc.Store's Get and ByOwner). A Store without it gets a full sync for
// every Touch.
type ReservationReader interface {
	Get(ctx context.Context, ip netip.Addr) (alloc.Reservation, bool, error)
	ByOwner(ctx context.Context, key string) ([]alloc.Reservation, error)
}

// DefaultWorkers bounds the confirms and imports one Sync runs at once.
// Each is a write plus a wait for the watch to show it, so one at a time
// rebuilt about 150 reservations a second whatever the apiserver could
// take; 16 in flight stay far below the apiserver's default
// max-mutating-inflight (200).
const DefaultWorkers = 16

// Reconciler compares live Services with the reservations and repairs the
// latter. Only one should run at a time (leader election); concurrent runs
// are still safe, since every write carries the version it read.
type Reconciler struct {
	o    Options
	kick chan struct{}

	// touched Services (namespace/name) waiting for SyncServices, recorded
	// only while Run runs (active): Run starts with a full sync, and a
	// replica that does not lead must not collect every Service's name.
	active  atomic.Bool
	mu      sync.Mutex
	dirty   map[string]struct{}
	touched chan struct{}
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
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Recorder == nil {
		o.Recorder = &record.FakeRecorder{} // nil channel: discards
	}
	return &Reconciler{o: o, kick: make(chan struct{}, 1), dirty: map[string]struct{}{}, touched: make(chan struct{}, 1)}, nil
}

// Touch asks for the sync of one Service (namespace/name) soon, without a
// full comparison: what a Service watch event needs. It never blocks.
func (r *Reconciler) Touch(key string) {
	if !r.active.Load() {
		return
	}
	r.mu.Lock()
	r.dirty[key] = struct{}{}
	r.mu.Unlock()
	select {
	case r.touched <- struct{}{}:
	default:
	}
}

// ServiceEvents is the Service informer's event handler for r: a create or
// delete Touches the Service, and so does an update that changes what it
// holds (UID, type, clusterIPs); other updates (status, labels, a relist
// replaying what the cache has) cost nothing.
func ServiceEvents(r *Reconciler) cache.ResourceEventHandlerFuncs {
	touch := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			r.Touch(key)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: touch,
		UpdateFunc: func(old, cur any) {
			o, n := asService(old), asService(cur)
			if o != nil && n != nil && o.UID == n.UID && o.Spec.Type == n.Spec.Type &&
				o.Spec.ClusterIP == n.Spec.ClusterIP && slices.Equal(o.Spec.ClusterIPs, n.Spec.ClusterIPs) {
				return
			}
			touch(cur)
		},
		DeleteFunc: touch,
	}
}

// takeDirty returns the touched Services and forgets them.
func (r *Reconciler) takeDirty() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.dirty))
	for k := range r.dirty {
		keys = append(keys, k)
	}
	clear(r.dirty)
	slices.Sort(keys)
	return keys
}

// Kick asks for a full sync soon; it never blocks. The state store's
// deletions (rebuild) and pool changes call it; Service events call Touch.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run syncs fully at start, on every kick, every Interval and at the next
// expiry of a pending or sticky reservation, and syncs touched Services
// one by one in between, until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	r.o.Log.Info("reconciler started", zap.Duration("interval", r.o.Interval))
	defer r.o.Log.Info("reconciler stopped")
	r.active.Store(true)
	defer func() { r.active.Store(false); r.takeDirty() }()
	full := true
	var due time.Time // when the next full sync is due
	for {
		if !r.o.Synced() {
			full = true
		} else if full {
			// Touched Services are part of the full comparison.
			r.takeDirty()
			wait := r.o.Interval
			next, err := r.Sync(ctx)
			if err != nil && ctx.Err() == nil {
				r.o.Log.Error("reconcile failed; retrying", zap.Error(err))
				wait = min(wait, 5*time.Second)
			}
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(r.o.Clock.Now()), minGap))
			}
			due, full = r.o.Clock.Now().Add(wait), false
		} else if keys := r.takeDirty(); len(keys) > 0 {
			if err := r.SyncServices(ctx, keys); err != nil && ctx.Err() == nil {
				r.o.Log.Error("reconciling touched Services failed; a full sync follows", zap.Error(err))
				due = minTime(due, r.o.Clock.Now().Add(5*time.Second))
			}
		}
		wait := time.Second // caches not synced yet
		if r.o.Synced() {
			wait = max(due.Sub(r.o.Clock.Now()), 0)
		}
		t := r.o.Clock.NewTimer(wait)
		var burst bool
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
			full = true
		case <-r.kick:
			t.Stop()
			full, burst = true, true
		case <-r.touched:
			t.Stop()
			burst = true
		}
		if burst {
			// Let a burst of events land before acting on it.
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

// listReservations lists every reservation, lowest address first, without
// copies when the store can (alloc.SharedLister). Nothing may modify them.
func (r *Reconciler) listReservations(ctx context.Context) ([]*alloc.Reservation, error) {
	if l, ok := r.o.Store.(alloc.SharedLister); ok {
		return l.ListShared(ctx)
	}
	rs, err := r.o.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*alloc.Reservation, len(rs))
	for i := range rs {
		out[i] = &rs[i]
	}
	slices.SortFunc(out, func(a, b *alloc.Reservation) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// listServices lists every cached Service as a SlimService: the cache's
// own objects when it holds SlimServices (NewSlimServiceLister), else a
// slim copy of each.
func (r *Reconciler) listServices() ([]*SlimService, error) {
	if l, ok := r.o.Services.(slimLister); ok {
		return l.slims(), nil
	}
	svcs, err := r.o.Services.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := make([]*SlimService, 0, len(svcs))
	for _, s := range svcs {
		out = append(out, NewSlimService(s))
	}
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// SyncServices is Sync restricted to the given Services (namespace/name),
// for watch events: each pool address a Service holds is confirmed bound to
// it, and each address bound to it that it no longer holds is released
// (sticky, the Service being gone) or freed (it lives without it). It
// reads only those Services and their reservations, so a burst of creates
// costs in proportion to the burst, not to the cluster. Expiries and
// anything an event cannot reveal (deleted state, a missed event) are left
// to the full Sync.
func (r *Reconciler) SyncServices(ctx context.Context, keys []string) (err error) {
	if !r.o.Synced() {
		return errors.New("caches not synced")
	}
	rd, ok := r.o.Store.(ReservationReader)
	if !ok {
		_, err := r.Sync(ctx)
		return err
	}
	defer func() {
		if err != nil && r.o.Metrics != nil {
			r.o.Metrics.ReconcileErrors.Inc()
		}
	}()
	pools := r.o.Allocator.Pools()
	var errs []error
	for _, key := range keys {
		ns, name, ok := strings.Cut(key, "/")
		if !ok {
			continue
		}
		s, err := r.o.Services.Services(ns).Get(name)
		switch {
		case apierrors.IsNotFound(err):
			s = nil
		case err != nil:
			errs = append(errs, fmt.Errorf("reading Service %s: %w", key, err))
			continue
		}
		var held []netip.Addr
		if s != nil {
			held = heldIPs(s)
		}
		for _, ip := range held {
			if pools.PoolOf(ip) == nil {
				continue
			}
			cur, had, err := rd.Get(ctx, ip)
			if err != nil {
				errs = append(errs, fmt.Errorf("reading the reservation of %s: %w", ip, err))
				continue
			}
			if _, err := r.confirm(ctx, s, ip, cur, had); err != nil {
				errs = append(errs, err)
			}
		}
		rs, err := rd.ByOwner(ctx, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the reservations of %s: %w", key, err))
			continue
		}
		for _, x := range rs {
			if x.State != alloc.StateBound || slices.Contains(held, x.IP) {
				continue
			}
			if _, err := r.release(ctx, x, s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
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
	// work counts what this sync repaired (its workers add to it); with
	// the failures it is the backlog gauge (what a sync right now still had
	// to do).
	var work atomic.Int64
	var errs []error
	defer func() {
		if r.o.Metrics == nil {
			return
		}
		if err != nil {
			r.o.Metrics.ReconcileErrors.Inc()
		}
		r.o.Metrics.Syncs.Inc()
		backlog := int(work.Load()) + len(errs)
		if err != nil && backlog == 0 {
			backlog = 1 // failed before it could see what there was to do
		}
		r.o.Metrics.Backlog.Set(float64(backlog))
	}()
	svcs, err := r.listServices()
	if err != nil {
		return time.Time{}, fmt.Errorf("listing Services: %w", err)
	}
	rs, err := r.listReservations(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing reservations: %w", err)
	}
	pools := r.o.Allocator.Pools()
	// Looked up by binary search rather than a map: at 27,000
	// reservations a map of copies was ~8 MiB more of the leader's heap
	// on every full sync.
	byIP := func(ip netip.Addr) (alloc.Reservation, bool) {
		i, ok := slices.BinarySearchFunc(rs, ip, func(x *alloc.Reservation, ip netip.Addr) int { return x.IP.Compare(ip) })
		if !ok {
			return alloc.Reservation{}, false
		}
		return *rs[i], true
	}
	// The Services as cached (SlimService): converted to a Service only
	// where one is written about.
	live := make(map[string]*SlimService, len(svcs))
	holder := make(map[netip.Addr]*SlimService)
	for _, s := range svcs {
		live[s.namespace+"/"+s.name] = s
		for _, ip := range s.heldIPs() {
			holder[ip] = s
		}
	}

	// 1. Confirm and import.
	ips := make([]netip.Addr, 0, len(holder))
	for ip := range holder {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	var (
		mu    sync.Mutex // errs
		wg    sync.WaitGroup
		queue = make(chan netip.Addr)
	)
	confirm := func(ip netip.Addr) {
		s := holder[ip]
		cur, had := byIP(ip) // read only: workers never write rs
		if _, err := r.confirm(ctx, s.Service(false), ip, cur, had); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			return
		}
		work.Add(1)
	}
	for range min(r.o.Workers, len(ips)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ip := range queue {
				confirm(ip)
			}
		}()
	}
	for _, ip := range ips {
		if pools.PoolOf(ip) == nil {
			continue // outside every pool: the apiserver's alone
		}
		s := holder[ip]
		owner := alloc.Owner{Namespace: s.namespace, Name: s.name, UID: string(s.uid)}
		if cur, had := byIP(ip); had && cur.State == alloc.StateBound && cur.Owner == owner {
			continue
		}
		queue <- ip // each address once: no two workers write the same reservation
	}
	close(queue)
	wg.Wait()

	// 2. Release what no live Service holds any more.
	for _, x := range rs {
		x := *x
		if x.State != alloc.StateBound {
			continue
		}
		if _, held := holder[x.IP]; held {
			continue
		}
		var s *corev1.Service
		if l := live[x.Owner.Namespace+"/"+x.Owner.Name]; l != nil {
			s = l.Service(false)
		}
		wrote, err := r.release(ctx, x, s)
		if err != nil {
			errs = append(errs, err)
		} else if wrote {
			work.Add(1)
		}
	}

	// 3. Collect expired pending and sticky reservations.
	// Only live Services keep an expired pending reservation (for Confirm
	// in the next pass); a leaked IPAddress object does not.
	// The record judged is the one CollectWith is about to delete, which
	// may be newer than rs (a claim made since the listing above).
	keep := func(x alloc.Reservation) bool {
		if s, ok := holder[x.IP]; ok {
			return s.namespace == x.Owner.Namespace && s.name == x.Owner.Name
		}
		_, held := r.ownerHolds(ctx, x, x.IP)
		return held
	}
	freed, err := r.o.Allocator.CollectWith(ctx, keep)
	work.Add(int64(len(freed)))
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
	if after, err := r.listReservations(ctx); err == nil {
		for _, x := range after {
			if x.State != alloc.StateBound && !x.Expires.IsZero() && (next.IsZero() || x.Expires.Before(next)) {
				next = x.Expires
			}
		}
	}
	return next, errors.Join(errs...)
}

// confirm records that the live Service s holds ip (pool address), given
// its current reservation cur (had: one exists): pending → bound, sticky →
// bound, none → imported, another owner's → taken over. Nothing is written
// when it is already bound to s.
func (r *Reconciler) confirm(ctx context.Context, s *corev1.Service, ip netip.Addr, cur alloc.Reservation, had bool) (alloc.Reservation, error) {
	owner := alloc.Owner{Namespace: s.Namespace, Name: s.Name, UID: string(s.UID)}
	if had && cur.State == alloc.StateBound && cur.Owner == owner {
		return cur, nil
	}
	saved, err := r.o.Allocator.Confirm(ctx, ip, owner)
	if err != nil {
		return saved, fmt.Errorf("confirming %s for %s/%s: %w", ip, s.Namespace, s.Name, err)
	}
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
	return saved, nil
}

// release handles a bound reservation x whose Service no longer holds its
// address: freed when the Service (or a re-created one of that name) s
// lives without it (downgraded, turned ExternalName or headless, or
// re-created with other addresses: nothing to stick to), sticky to its
// name when the Service is gone (s nil). It reports whether it wrote.
func (r *Reconciler) release(ctx context.Context, x alloc.Reservation, s *corev1.Service) (bool, error) {
	if s != nil {
		// Unless the cache is behind: a downgrade followed at once by an
		// upgrade gets the same address back (the reservation is still its
		// own), and freeing it on the older view would hand a held address
		// to the next request.
		if _, held := r.serviceHolds(ctx, x.Owner.Namespace, x.Owner.Name, x.IP); held {
			return false, nil
		}
		// Only the record judged: an upgrade admitted meanwhile made it
		// pending again (alloc re-claims a bound address with a write),
		// and that claim must outlive this older judgement.
		freed, err := r.o.Allocator.FreeUnchanged(ctx, x)
		if err != nil {
			return false, fmt.Errorf("freeing %s of %s: %w", x.IP, x.Owner, err)
		}
		if !freed {
			return false, nil
		}
		r.count(func(m *Metrics) { m.Collected.Inc() })
		r.event(s, corev1.EventTypeNormal, ReasonReleased, "clusterIP %s (pool %s) freed: the Service no longer holds it", x.IP, x.Pool)
		r.o.Log.Info("reservation freed: Service no longer holds it", zap.Stringer("ip", x.IP), zap.String("service", x.Owner.String()))
		return true, nil
	}
	if err := r.o.Allocator.Release(ctx, x.IP, x.Owner); err != nil {
		return false, fmt.Errorf("releasing %s of %s: %w", x.IP, x.Owner, err)
	}
	r.event(gone(x.Owner), corev1.EventTypeNormal, ReasonReleased, "Service deleted: clusterIP %s (pool %s) stays reserved to %s for re-creation", x.IP, x.Pool, x.Owner)
	r.o.Log.Info("reservation sticky: Service deleted", zap.Stringer("ip", x.IP), zap.String("service", x.Owner.String()))
	return true, nil
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
	return heldAddrs(s.Namespace, s.Name, s.Spec.Type, s.Spec.ClusterIP, s.Spec.ClusterIPs)
}

func (c *SlimService) heldIPs() []netip.Addr {
	return heldAddrs(c.namespace, c.name, c.typ, c.clusterIP, c.clusterIPs)
}

func heldAddrs(namespace, name string, typ corev1.ServiceType, clusterIP string, ips []string) []netip.Addr {
	if typ == corev1.ServiceTypeExternalName || (namespace == "default" && name == "kubernetes") {
		return nil
	}
	if len(ips) == 0 && clusterIP != "" {
		ips = []string{clusterIP}
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
