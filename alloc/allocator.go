package alloc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// Defaults of Options.
const (
	// DefaultRetention keeps a deleted Service's address for its
	// namespace/name for a day: long enough for a redeploy or a restore,
	// short enough not to starve a small pool.
	DefaultRetention = 24 * time.Hour
	// DefaultPendingGrace is how long a reservation made at admission may
	// wait for its Service to appear. Admission timeouts are at most 30s;
	// the margin covers a slow reconciler.
	DefaultPendingGrace = 10 * time.Minute
	// DefaultMaxAttempts bounds the candidates tried per address when
	// writers race (each lost candidate is excluded from the next try, so
	// with N replicas racing, N attempts always suffice; the rest is margin
	// for caches that lag behind the apiserver).
	DefaultMaxAttempts = 32
	// DefaultSpread and DefaultSpreadFor: see Options.Spread. 32 leaves
	// room for three replicas with a dozen requests in flight each to
	// settle on ranks that do not overlap.
	DefaultSpread    = 32
	DefaultSpreadFor = 10 * time.Minute
	// recentTTL bounds how long an address this allocator created or lost
	// is kept aside when the store's view never shows it (created and
	// deleted again before the watch delivered it).
	recentTTL = 10 * time.Second
)

// HolderFunc reports whether something outside our records holds ip (a live
// Service, an IPAddress object) and who ("namespace/name"). It is fed by
// informers; it must be fast and safe for concurrent use.
type HolderFunc func(ip netip.Addr) (owner string, held bool)

// Options configure an Allocator. Zero values take the defaults.
type Options struct {
	Logger *zap.Logger
	// Clock is injected so tests drive retention without sleeping.
	Clock clock.PassiveClock
	// Retention is how long a released address stays sticky; negative
	// frees released addresses at once.
	Retention time.Duration
	// PendingGrace is how long a pending reservation lives unconfirmed.
	PendingGrace time.Duration
	// MaxAttempts bounds retries on ErrExists/ErrConflict.
	MaxAttempts int
	// External vetoes addresses held outside our records.
	External HolderFunc
	// ConfirmExternal, when set, re-checks a *requested* address that
	// External reports held by someone else against the source of truth
	// (a live read of the apiserver's IPAddress object), so that a cache
	// lagging behind a delete never denies an address the apiserver has
	// already freed. An error keeps External's answer. Candidates of
	// reserveNext are not re-checked: skipping one costs nothing.
	ConfirmExternal func(ctx context.Context, ip netip.Addr) (owner string, held bool, err error)
	// Subjects, when set, finds the live Service of a bound reservation so
	// that a pools change cannot leave it outside its pool's selectors
	// (ValidateAccessChange). nil skips that check.
	Subjects SubjectFunc
	// Spread shapes StrategyLowest when several allocators (replicas)
	// share the store. Alone, an allocator never loses a race and hands
	// out exactly the lowest free address. Once it has lost a race to
	// another writer, and for SpreadFor after its last lost race, it takes
	// the free address of rank r (0 = the lowest free) instead, r drawn at
	// random in [0, Spread) at each lost race: replicas settle on ranks
	// that do not collide, instead of all racing for the same lowest
	// address (kube-apiserver's allocator starts at a random offset for the
	// same reason). 0 takes DefaultSpread; 1 or less never spreads.
	Spread int
	// SpreadFor: see Spread; 0 takes DefaultSpreadFor.
	SpreadFor time.Duration
	// Rand returns a random int in [0, n); nil uses math/rand/v2. Tests
	// inject it.
	Rand func(n int) int
}

// Allocator hands out, records and frees pinned clusterIPs. The choice is
// the pure function Next; the Store persists and arbitrates races. An
// Allocator is safe for concurrent use; several Allocators (replicas) may
// share one persistent store.
type Allocator struct {
	store Store
	pools atomic.Pointer[Pools]
	log   *zap.Logger
	clock clock.PassiveClock
	opts  Options

	// inflight holds candidates this process is creating right now, so that
	// concurrent requests in one replica spread over different addresses
	// instead of all racing for the same lowest free one (only one of which
	// can win per round; the losers would starve under "lowest").
	inflightMu sync.Mutex
	inflight   map[netip.Addr]struct{}
	// recent holds addresses this allocator created, or lost to another
	// writer, that the store's view may not show yet (CandidateView): they
	// are skipped at once instead of being tried again, and forgotten as
	// soon as the view shows them (or after recentTTL).
	recent map[netip.Addr]time.Time
	// rank and spreadUntil: see Options.Spread.
	rank        int
	spreadUntil time.Time
}

// New returns an Allocator over store with the compiled pools.
func New(store Store, pools *Pools, opts Options) (*Allocator, error) {
	if store == nil {
		return nil, errors.New("alloc.New: nil store")
	}
	if pools == nil {
		return nil, errors.New("alloc.New: nil pools (compile a PoolConfig first)")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.PendingGrace <= 0 {
		opts.PendingGrace = DefaultPendingGrace
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Spread == 0 {
		opts.Spread = DefaultSpread
	}
	if opts.SpreadFor <= 0 {
		opts.SpreadFor = DefaultSpreadFor
	}
	if opts.Rand == nil {
		opts.Rand = rand.IntN
	}
	a := &Allocator{store: store, log: opts.Logger, clock: opts.Clock, opts: opts,
		inflight: map[netip.Addr]struct{}{}, recent: map[netip.Addr]time.Time{}}
	a.pools.Store(pools)
	return a, nil
}

// Pools returns the pools in force.
func (a *Allocator) Pools() *Pools { return a.pools.Load() }

// SetPools swaps the pools in force (after Compile and ValidateChange).
func (a *Allocator) SetPools(p *Pools) {
	if p != nil {
		a.pools.Store(p)
	}
}

// Request asks for the addresses of one Service.
type Request struct {
	Owner Owner
	// Annotations are the Service's (pool selection by PoolAnnotation).
	Annotations map[string]string
	// NamespaceLabels are the labels of the Service's Namespace.
	NamespaceLabels map[string]string
	// Labels are the Service's own labels (a pool's serviceSelector).
	Labels map[string]string
	// Families lists, in order, the families to allocate an address for
	// (policy.Decision.Allocate).
	Families []corev1.IPFamily
	// Requested are addresses the Service sets itself: each is reserved if
	// free and inside a pool, accepted unrecorded if free and outside every
	// pool, refused if held or outside every ServiceCIDR.
	Requested []netip.Addr
	// DryRun computes the same answer and persists nothing.
	DryRun bool
}

// subject is the Service of the request as pools see it.
func (r Request) subject() Subject {
	name := r.Owner.Name
	if name == "" {
		name = r.Owner.GenerateName + "*"
	}
	return Subject{Namespace: r.Owner.Namespace, Name: name, NamespaceLabels: r.NamespaceLabels, Labels: r.Labels}
}

// Result is the answer to a Request.
type Result struct {
	// IPs is aligned with Request.Families; an invalid Addr means "not
	// pinned" (no pool selected, or the pool has no address of that
	// family): the apiserver allocates that one dynamically.
	IPs []netip.Addr
	// Pool is the selected pool's name ("" if none).
	Pool string
	// Reservations are the records written (or that would be, on dry run)
	// for allocated and requested addresses, including reused ones.
	Reservations []Reservation
}

// undo reverts one write of a Reserve call.
type undo struct {
	created *Reservation // delete it
	before  *Reservation // restore it (a sticky/pending record we re-claimed)
	after   Reservation
}

// Reserve serves a Service's whole request, all or nothing: if any address
// fails, the ones already written by this call are rolled back, so a
// dual-stack Service never ends up with half a pair.
func (a *Allocator) Reserve(ctx context.Context, req Request) (res Result, err error) {
	pools := a.pools.Load()
	var pool *Pool
	if len(req.Families) > 0 {
		if pool, err = pools.Select(req.subject(), req.Annotations); err != nil {
			return Result{}, err
		}
	}
	if pool != nil {
		res.Pool = pool.Name
	}
	var undos []undo
	defer func() {
		if err != nil && !req.DryRun {
			a.rollback(undos)
		}
	}()
	for _, ip := range req.Requested {
		r, u, err := a.reserveRequested(ctx, pools, req, ip)
		if err != nil {
			return Result{}, err
		}
		if u != nil {
			undos = append(undos, *u)
		}
		if r != nil {
			res.Reservations = append(res.Reservations, *r)
		}
	}
	for _, f := range req.Families {
		if pool == nil || !pool.Has(f) {
			res.IPs = append(res.IPs, netip.Addr{})
			continue
		}
		r, u, err := a.reserveNext(ctx, pool, f, req)
		if err != nil {
			return Result{}, fmt.Errorf("%s address for %s: %w", f, req.Owner, err)
		}
		if u != nil {
			undos = append(undos, *u)
		}
		res.IPs = append(res.IPs, r.IP)
		res.Reservations = append(res.Reservations, r)
	}
	return res, nil
}

// Check answers whether the Service of req may use ip as a requested
// address, persisting nothing: nil, *ErrPoolAccess, *ErrHeld or
// *ErrNotInServiceCIDR. For /validate; req.Owner, req.Labels and
// req.NamespaceLabels are what it reads.
func (a *Allocator) Check(ctx context.Context, ip netip.Addr, req Request) error {
	req.DryRun = true
	_, _, err := a.reserveRequested(ctx, a.pools.Load(), req, ip)
	return err
}

func (a *Allocator) rollback(undos []undo) {
	// A fresh context: the request's may be what just expired.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := len(undos) - 1; i >= 0; i-- {
		u := undos[i]
		var err error
		switch {
		case u.created != nil:
			err = a.store.Delete(ctx, *u.created)
			a.forget(u.created.IP)
		case u.before != nil:
			b := *u.before
			b.Version = u.after.Version
			_, err = a.store.Update(ctx, b)
		}
		if err != nil {
			// Not fatal: a pending reservation is collected after its grace.
			a.log.Warn("rollback of a partial reservation failed; it expires on its own", zap.Error(err))
		}
	}
}

func (a *Allocator) pending(owner Owner, pool string, ip netip.Addr) Reservation {
	now := a.clock.Now()
	owner.UID = ""
	return Reservation{IP: ip, Pool: pool, Owner: owner, State: StatePending, Created: now, Updated: now, Expires: now.Add(a.opts.PendingGrace)}
}

// reserveRequested handles an address the Service sets itself.
//
// An address of a restricted pool is refused (*ErrPoolAccess) to a Service
// the pool does not serve, unless the address is already this Service's
// (re-invocation, UPDATE, its own sticky address): access rules decide who
// may take an address, never who must give one back. The refusal comes
// before the holder check so that it does not tell an outsider who holds
// the other team's addresses.
func (a *Allocator) reserveRequested(ctx context.Context, pools *Pools, req Request, ip netip.Addr) (*Reservation, *undo, error) {
	if !pools.InServiceCIDR(ip) {
		return nil, nil, &ErrNotInServiceCIDR{IP: ip, CIDRs: pools.CIDRs}
	}
	var poolName string
	var denied error
	if p := pools.PoolOf(ip); p != nil {
		poolName = p.Name
		if s := req.subject(); !p.ServesExplicit(s) {
			denied = &ErrPoolAccess{Pool: p.Name, Audience: p.Audience(), Subject: s.String(), IP: ip}
		}
	}
	lr, canReadLive := a.store.(LiveReader)
	readLive := false // re-claiming our own claim: write from the live record
	for range a.opts.MaxAttempts {
		cur, ok, err := a.store.Get(ctx, ip)
		if err != nil {
			return nil, nil, err
		}
		if readLive && canReadLive {
			if live, lok, lerr := lr.GetLive(ctx, ip); lerr == nil {
				cur, ok = live, lok
			}
		}
		if ok && !mayUse(cur.Owner, req.Owner) {
			// About to refuse on a cached answer: confirm it (LiveReader).
			// A failed read keeps the cached answer.
			if canReadLive && !readLive {
				if live, lok, lerr := lr.GetLive(ctx, ip); lerr == nil {
					cur, ok = live, lok
				}
			}
		}
		if denied != nil && !(ok && mayUse(cur.Owner, req.Owner)) {
			return nil, nil, denied
		}
		if ok {
			switch {
			case mayUse(cur.Owner, req.Owner):
				if req.DryRun || (cur.State == StatePending && cur.Owner.Name == "") {
					// Ours already. A nameless claim (generateName) is
					// only ever handed back to a re-invocation of the
					// admission that made it, whose name is not known yet.
					return &cur, nil, nil
				}
				if cur.State != StateSticky && !readLive {
					// Re-claimed with a write from the live record, as
					// reuse does (an UPDATE asking for an address still
					// bound to it, a retry or re-invocation of a pending
					// claim): a free or a collection judged on the older
					// record then conflicts.
					readLive = true
					continue
				}
				next := a.pending(req.Owner, cur.Pool, ip)
				next.Created, next.Version = cur.Created, cur.Version
				saved, err := a.store.Update(ctx, next)
				if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, nil, err
				}
				return &saved, &undo{before: &cur, after: saved}, nil
			case cur.State == StateSticky && cur.Expired(a.clock.Now()):
				// Retention is over: the address is free, collect it now.
				if req.DryRun {
					break
				}
				if err := a.store.Delete(ctx, cur); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
					return nil, nil, err
				}
				continue
			default:
				return nil, nil, &ErrHeld{IP: ip, Owner: cur.Owner.String(), State: string(cur.State)}
			}
		}
		if a.opts.External != nil {
			me := req.Owner.Namespace + "/" + req.Owner.Name
			if holder, held := a.opts.External(ip); held && holder != me {
				if a.opts.ConfirmExternal != nil {
					if h, ok, err := a.opts.ConfirmExternal(ctx, ip); err == nil {
						holder, held = h, ok
					}
				}
				if held && holder != me {
					return nil, nil, &ErrHeld{IP: ip, Owner: holder, State: "live"}
				}
			}
		}
		r := a.pending(req.Owner, poolName, ip)
		if poolName == "" || req.DryRun {
			// Outside every pool: the apiserver arbitrates; nothing to record.
			if poolName == "" {
				return nil, nil, nil
			}
			return &r, nil, nil
		}
		saved, err := a.store.Create(ctx, r)
		if errors.Is(err, ErrExists) {
			continue // someone was faster: re-read to say who
		}
		if err != nil {
			return nil, nil, err
		}
		return &saved, &undo{created: &saved}, nil
	}
	return nil, nil, fmt.Errorf("requested IP %s: %w", ip, ErrContended)
}

// reserveNext allocates one address of family f from pool.
func (a *Allocator) reserveNext(ctx context.Context, pool *Pool, f corev1.IPFamily, req Request) (Reservation, *undo, error) {
	// Idempotency and stickiness: an address this owner already has in
	// this pool and family (re-invocation, retried request, re-create).
	if r, u, ok, err := a.reuse(ctx, pool, f, req); err != nil || ok {
		return r, u, err
	}
	if pool.State == PoolDraining {
		return Reservation{}, nil, fmt.Errorf("pool %q: %w", pool.Name, ErrDraining)
	}
	key := req.Owner.Key()
	lost := map[netip.Addr]struct{}{}
	skip := func(ip netip.Addr) bool {
		if _, ok := lost[ip]; ok {
			return true
		}
		if a.isBusy(ip) {
			return true
		}
		if a.opts.External != nil {
			_, held := a.opts.External(ip)
			return held
		}
		return false
	}
	for range a.opts.MaxAttempts {
		var cand netip.Addr
		var found bool
		if err := a.view(ctx, func(t *IPSet) {
			a.prune(t)
			if rank := a.spreadRank(); pool.Strategy != StrategyHash && rank > 0 {
				cand, found = NextRank(pool.Addresses, f, t, rank, skip)
			} else {
				cand, found = Next(pool.Addresses, f, t, pool.Strategy, key, skip)
			}
		}); err != nil {
			return Reservation{}, nil, err
		}
		if !found {
			return Reservation{}, nil, fmt.Errorf("pool %q has no free %s address: %w", pool.Name, f, ErrFull)
		}
		r := a.pending(req.Owner, pool.Name, cand)
		if req.DryRun {
			return r, nil, nil
		}
		if !a.claim(cand) {
			lost[cand] = struct{}{} // a sibling request chose it first
			continue
		}
		saved, err := a.store.Create(ctx, r)
		a.unclaim(cand)
		if errors.Is(err, ErrExists) {
			lost[cand] = struct{}{}
			a.lostRace(cand, pool.Strategy)
			continue
		}
		if err != nil {
			return Reservation{}, nil, err
		}
		a.remember(cand)
		return saved, &undo{created: &saved}, nil
	}
	return Reservation{}, nil, fmt.Errorf("pool %q: %d candidates lost: %w", pool.Name, len(lost), ErrContended)
}

// view runs fn on the taken set the decision is made on: the store's
// current view when it offers one (CandidateView), else Taken.
func (a *Allocator) view(ctx context.Context, fn func(*IPSet)) error {
	if cv, ok := a.store.(CandidateView); ok {
		return cv.TakenNow(fn)
	}
	return a.store.Taken(ctx, fn)
}

// isBusy: a sibling request is creating ip, or this allocator recently
// created or lost it.
func (a *Allocator) isBusy(ip netip.Addr) bool {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	if _, ok := a.inflight[ip]; ok {
		return true
	}
	_, ok := a.recent[ip]
	return ok
}

// remember keeps an address this allocator created aside until the view
// shows it.
func (a *Allocator) remember(ip netip.Addr) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	a.recent[ip] = a.clock.Now()
}

// forget: an address is free again by this allocator's own delete
// (rollback, Free, Collect), so it need not wait for recentTTL.
func (a *Allocator) forget(ip netip.Addr) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	delete(a.recent, ip)
}

// lostRace: another writer created ip first. It is kept aside at once (the
// view will show it shortly), and under StrategyLowest this allocator
// spreads its picks (Options.Spread) on a freshly drawn rank.
func (a *Allocator) lostRace(ip netip.Addr, s Strategy) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	now := a.clock.Now()
	a.recent[ip] = now
	if s == StrategyHash || a.opts.Spread <= 1 {
		return
	}
	a.rank = a.opts.Rand(a.opts.Spread)
	a.spreadUntil = now.Add(a.opts.SpreadFor)
}

// spreadRank is the rank StrategyLowest takes now: 0 (the lowest free)
// unless a race was lost within SpreadFor.
func (a *Allocator) spreadRank() int {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	if a.rank == 0 || !a.clock.Now().Before(a.spreadUntil) {
		return 0
	}
	return a.rank
}

// prune forgets the recent addresses the view now shows (or that it never
// showed within recentTTL). It runs inside the view callback; the set is
// as small as the writes in flight.
func (a *Allocator) prune(taken *IPSet) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	now := a.clock.Now()
	for ip, at := range a.recent {
		if taken.Contains(ip) || now.Sub(at) > recentTTL {
			delete(a.recent, ip)
		}
	}
}

func (a *Allocator) claim(ip netip.Addr) bool {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	if _, ok := a.inflight[ip]; ok {
		return false
	}
	a.inflight[ip] = struct{}{}
	return true
}

func (a *Allocator) unclaim(ip netip.Addr) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	delete(a.inflight, ip)
}

// reuse finds and re-claims an address owner already holds in pool/family.
func (a *Allocator) reuse(ctx context.Context, pool *Pool, f corev1.IPFamily, req Request) (Reservation, *undo, bool, error) {
	for range a.opts.MaxAttempts {
		rs, err := a.store.ByOwner(ctx, req.Owner.Key())
		if err != nil {
			return Reservation{}, nil, false, err
		}
		var pick *Reservation
		for i := range rs {
			r := &rs[i]
			if r.Pool != pool.Name || r.Family() != f || !sameService(r.Owner, req.Owner) {
				continue
			}
			if pick == nil || (pick.State == StateSticky && r.State != StateSticky) {
				pick = r // prefer a live claim over a sticky one
			}
		}
		if pick == nil {
			return Reservation{}, nil, false, nil
		}
		if a.allocatedUpstream(ctx, pick.IP) {
			// The apiserver still records the address as allocated (an
			// IPAddress object, e.g. re-created for the deleted Service by
			// its repair controller from a stale cache): it would refuse to
			// allocate it again ("provided IP is already allocated"), so
			// handing it back would turn an admissible request into an
			// error. Leave the reservation as it is and pick another.
			a.log.Info("address of this Service still allocated in the apiserver; allocating another",
				zap.String("owner", req.Owner.String()), zap.Stringer("ip", pick.IP), zap.String("state", string(pick.State)))
			return Reservation{}, nil, false, nil
		}
		if req.DryRun {
			// Nothing is written, so nothing else would notice a cache that
			// has not seen the claim collected and the address given to
			// another Service meanwhile: confirm it (LiveReader).
			if !a.stillClaimed(ctx, *pick, req.Owner) {
				return Reservation{}, nil, false, nil
			}
			return *pick, nil, true, nil
		}
		if pick.State != StateSticky {
			// A pending or bound claim handed back to an admission in
			// flight is re-claimed with a write: pending, for a fresh
			// grace. The reconciler frees a bound address its Service no
			// longer shows (a downgrade, upgraded again at once) and
			// collects a pending one past its grace whose Service does not
			// hold it (a retry or re-create), and neither its cache nor a
			// live read of the Service shows this admission before it is
			// stored: handed back as it was, the address would be freed
			// while the Service being stored holds it. With the write, a
			// free judged on the older record conflicts. It starts from
			// the live record (a lagging cache costs no conflict), which
			// also confirms the claim is still this Service's.
			live, ok := a.liveClaim(ctx, *pick, req.Owner)
			if !ok {
				return Reservation{}, nil, false, nil
			}
			pick = &live
		}
		next := a.pending(req.Owner, pick.Pool, pick.IP)
		next.Created, next.Version = pick.Created, pick.Version
		saved, err := a.store.Update(ctx, next)
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return Reservation{}, nil, false, err
		}
		a.log.Debug("sticky address handed back", zap.String("owner", req.Owner.String()), zap.Stringer("ip", saved.IP))
		return saved, &undo{before: pick, after: saved}, true, nil
	}
	return Reservation{}, nil, false, fmt.Errorf("re-claiming the address of %s: %w", req.Owner, ErrContended)
}

// stillClaimed re-reads a cached claim of owner when the store can read
// live; a failed read keeps the cached answer.
func (a *Allocator) stillClaimed(ctx context.Context, cached Reservation, owner Owner) bool {
	_, ok := a.liveClaim(ctx, cached, owner)
	return ok
}

// liveClaim re-reads a cached claim of owner when the store can read live
// and returns the current record if it is still owner's; a store that
// cannot read live, or a failed read, keeps the cached record (a write
// from it then fails on its version if it was stale).
func (a *Allocator) liveClaim(ctx context.Context, cached Reservation, owner Owner) (Reservation, bool) {
	lr, ok := a.store.(LiveReader)
	if !ok {
		return cached, true
	}
	live, found, err := lr.GetLive(ctx, cached.IP)
	if err != nil {
		return cached, true
	}
	return live, found && sameService(live.Owner, owner) && live.Pool == cached.Pool
}

// allocatedUpstream reports whether something outside our records (a live
// Service, an IPAddress object) holds ip, whoever it names: reuse hands an
// address out for a new allocation, which the apiserver refuses for any
// address it still records. A positive cached answer is confirmed live
// when ConfirmExternal is set (a cache lagging a delete must not cost a
// re-created Service its sticky address); a failed confirmation counts as
// held, which only costs stickiness, never an error.
func (a *Allocator) allocatedUpstream(ctx context.Context, ip netip.Addr) bool {
	if a.opts.External == nil {
		return false
	}
	if _, held := a.opts.External(ip); !held {
		return false
	}
	if a.opts.ConfirmExternal == nil {
		return true
	}
	_, held, err := a.opts.ConfirmExternal(ctx, ip)
	return err != nil || held
}

// Confirm records that the live Service owner (namespace, name, UID) holds
// ip: a pending reservation becomes bound, a sticky one of the same name is
// re-bound, a missing one inside a pool is created bound (pins we did not
// make, or state rebuilt after deletion). The live Service is the truth, so
// a reservation of another owner is taken over (and logged). Addresses
// outside every pool are not recorded.
func (a *Allocator) Confirm(ctx context.Context, ip netip.Addr, owner Owner) (Reservation, error) {
	owner.RequestUID, owner.GenerateName = "", ""
	for range a.opts.MaxAttempts {
		cur, ok, err := a.store.Get(ctx, ip)
		if err != nil {
			return Reservation{}, err
		}
		now := a.clock.Now()
		if !ok {
			p := a.pools.Load().PoolOf(ip)
			if p == nil {
				return Reservation{}, nil
			}
			saved, err := a.store.Create(ctx, Reservation{IP: ip, Pool: p.Name, Owner: owner, State: StateBound, Created: now, Updated: now})
			if errors.Is(err, ErrExists) {
				continue
			}
			return saved, err
		}
		if cur.State == StateBound && cur.Owner == owner {
			return cur, nil
		}
		if !sameService(cur.Owner, owner) && !(cur.Owner.Name == "" && cur.Owner.Namespace == owner.Namespace) {
			a.log.Warn("live Service holds an address reserved to another owner; recording the live one",
				zap.Stringer("ip", ip), zap.String("reservedTo", cur.Owner.String()), zap.String("liveOwner", owner.String()))
		}
		next := cur
		next.Owner, next.State, next.Updated, next.Expires = owner, StateBound, now, time.Time{}
		saved, err := a.store.Update(ctx, next)
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			continue
		}
		return saved, err
	}
	return Reservation{}, fmt.Errorf("confirming %s: %w", ip, ErrContended)
}

// Release records that owner's Service is gone: its address stays sticky to
// namespace/name for the retention period. A nameless pending owner has no
// name to stick to, so its address is freed. Releasing an address not
// reserved is a no-op; releasing one held by another owner is *ErrHeld.
func (a *Allocator) Release(ctx context.Context, ip netip.Addr, owner Owner) error {
	for range a.opts.MaxAttempts {
		cur, ok, err := a.store.Get(ctx, ip)
		if err != nil || !ok {
			return err
		}
		if !sameService(cur.Owner, owner) || (owner.UID != "" && cur.Owner.UID != "" && owner.UID != cur.Owner.UID) {
			return &ErrHeld{IP: ip, Owner: cur.Owner.String(), State: string(cur.State)}
		}
		if cur.State == StateSticky {
			return nil
		}
		if cur.Owner.Name == "" || a.opts.Retention < 0 {
			if err = a.store.Delete(ctx, cur); err == nil {
				a.forget(ip)
			}
		} else {
			now := a.clock.Now()
			next := cur
			next.State, next.Updated, next.Expires = StateSticky, now, now.Add(a.opts.Retention)
			next.Owner.UID, next.Owner.RequestUID = "", ""
			_, err = a.store.Update(ctx, next)
		}
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("releasing %s: %w", ip, ErrContended)
}

// Free deletes the reservation of ip whatever its state (rollback, operator
// action, Service downgraded). Freeing an absent reservation is a no-op.
func (a *Allocator) Free(ctx context.Context, ip netip.Addr) error {
	for range a.opts.MaxAttempts {
		cur, ok, err := a.store.Get(ctx, ip)
		if err != nil || !ok {
			return err
		}
		err = a.store.Delete(ctx, cur)
		if err == nil || errors.Is(err, ErrNotFound) {
			a.forget(ip)
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("freeing %s: %w", ip, ErrContended)
}

// FreeUnchanged deletes r only if the store still holds it at r.Version, and
// reports whether it did. The reconciler frees what it judged: a
// reservation re-claimed meanwhile (an upgrade admitted again, made pending)
// is a new fact, judged again at the next sync, never deleted on the old
// one.
func (a *Allocator) FreeUnchanged(ctx context.Context, r Reservation) (bool, error) {
	err := a.store.Delete(ctx, r)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a.forget(r.IP)
	return true, nil
}

// Collect frees pending reservations past their grace and sticky ones past
// their retention, and returns what it freed. A pending reservation that a
// live Service of the same name already holds (per Options.External) is
// left for Confirm. Run it from the (single, leader-elected) reconciler;
// concurrent runs are safe because deletes carry the version read.
func (a *Allocator) Collect(ctx context.Context) ([]Reservation, error) {
	var keep KeepFunc
	if held := a.opts.External; held != nil {
		keep = func(r Reservation) bool {
			holder, ok := held(r.IP)
			return ok && holder == r.Owner.Namespace+"/"+r.Owner.Name
		}
	}
	return a.CollectWith(ctx, keep)
}

// KeepFunc reports whether an expired pending reservation must be kept
// because its Service holds the address (it is left for Confirm).
type KeepFunc func(r Reservation) bool

// CollectWith is Collect with the caller's judgement of which expired
// pending reservations to keep (nil: none). It is asked about the very
// record about to be deleted, not about an address: a caller looking the
// address up in its own, older listing would judge a claim made since by
// what it saw before (the soak: a pending claim missing from the
// reconciler's listing was collected while its Service held it). The
// reconciler keeps what the live Services it has just confirmed hold, and
// not what IPAddress objects name: an IPAddress the apiserver's repair
// controller leaks for a deleted Service names that Service, and must not
// keep its pending reservation alive (the address stays off limits through
// Options.External anyway).
func (a *Allocator) CollectWith(ctx context.Context, keep KeepFunc) ([]Reservation, error) {
	rs, err := a.store.List(ctx)
	if err != nil {
		return nil, err
	}
	now := a.clock.Now()
	var freed []Reservation
	for _, r := range rs {
		if !r.Expired(now) {
			continue
		}
		if r.State == StatePending && keep != nil && keep(r) {
			continue
		}
		err := a.store.Delete(ctx, r)
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			continue // changed meanwhile: no longer ours to judge
		}
		if err != nil {
			return freed, err
		}
		a.forget(r.IP)
		a.log.Info("reservation expired", zap.Stringer("ip", r.IP), zap.String("owner", r.Owner.String()), zap.String("state", string(r.State)))
		freed = append(freed, r)
	}
	return freed, nil
}

// CheckConfig compiles c against cidrs and checks that it orphans no address
// in use (ValidateChange against every current reservation) and leaves no
// bound Service outside its pool's selectors (ValidateAccessChange against
// the pools in force), without applying it. The validating webhook calls it for edits of the pools
// ConfigMap.
func (a *Allocator) CheckConfig(ctx context.Context, c *PoolConfig, cidrs []netip.Prefix) (*Pools, error) {
	next, err := Compile(c, cidrs)
	if err != nil {
		return nil, err
	}
	rs, err := a.store.List(ctx)
	if err != nil {
		return nil, err
	}
	if err := ValidateChange(next, rs); err != nil {
		return nil, err
	}
	if err := ValidateAccessChange(a.pools.Load(), next, rs, a.opts.Subjects); err != nil {
		return nil, err
	}
	return next, nil
}

// ApplyConfig is CheckConfig, then swaps the pools in force. On error the
// old pools stay (the informer on the pools ConfigMap logs and keeps going).
func (a *Allocator) ApplyConfig(ctx context.Context, c *PoolConfig, cidrs []netip.Prefix) error {
	next, err := a.CheckConfig(ctx, c, cidrs)
	if err != nil {
		return err
	}
	a.pools.Store(next)
	a.log.Info("pools applied", zap.Int("pools", len(next.List)), zap.String("cidrs", joinPrefixes(cidrs)))
	return nil
}
