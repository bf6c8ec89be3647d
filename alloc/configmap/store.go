package configmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// Labels and values on every reservation ConfigMap.
const (
	LabelPool      = "dualstack-webhook.io/pool"
	LabelFamily    = "dualstack-webhook.io/family"
	LabelState     = "dualstack-webhook.io/state"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "dualstack-webhook"
	// Selector picks reservation ConfigMaps only (not the pools ConfigMap,
	// which carries no family label).
	Selector = LabelManagedBy + "=" + ManagedBy + "," + LabelFamily
)

// Rate limits RaiseRateLimits applies. One reservation is one write; a
// dual-stack Service two. What keeps the store a good neighbour of the
// apiserver's max-mutating-inflight (200) is how many writes are in flight
// (one per admission in progress, plus the reconciler's bounded workers),
// not their rate; the rate limit only has to stay out of the way of a
// rebuild, which rewrites every reservation (25,000 for 20,000 Services)
// and at 100 QPS took over four minutes.
const (
	DefaultQPS   = 1000
	DefaultBurst = 1000
)

// DefaultWaitTimeout bounds how long a read waits for the informer to
// deliver this store's own writes; past it the read fails with
// alloc.ErrNotReady (a 500, so failurePolicy decides) rather than deciding
// on a stale cache.
const DefaultWaitTimeout = 10 * time.Second

// RaiseRateLimits returns a copy of cfg whose QPS and Burst are at least
// DefaultQPS and DefaultBurst (higher values set by the caller are kept).
func RaiseRateLimits(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	if c.RateLimiter == nil {
		c.QPS = max(c.QPS, DefaultQPS)
		c.Burst = max(c.Burst, DefaultBurst)
	}
	return c
}

// Options configure a Store.
type Options struct {
	// Namespace holds the reservation ConfigMaps (the webhook's own).
	Namespace string
	Logger    *zap.Logger
	// WaitTimeout: see DefaultWaitTimeout.
	WaitTimeout time.Duration
	// HintWait: see DefaultHintWait.
	HintWait time.Duration
	// OnDelete, when set, is called (outside the store's lock, from the
	// informer's goroutine; it must not block) whenever a reservation
	// ConfigMap disappears, whoever deleted it: the reconciler uses it to
	// rebuild deleted state at once instead of at its next periodic sync.
	OnDelete func()
	// Metrics, when set, times the store's requests (NewMetrics).
	Metrics *Metrics
}

// expectation is a write of ours the informer has not delivered yet.
type expectation struct {
	seq  uint64
	rv   string // resourceVersion written (or, for a delete, the one deleted)
	gone bool   // we deleted it
	// any: someone else's object we learnt of through AlreadyExists; any
	// event for the name settles it.
	any bool
	// owner is the Owner.Key() our write recorded, prev the one the cache
	// showed for the address when the write returned: only ByOwner of
	// these two can change when the write is delivered.
	owner, prev string
}

// Store is the ConfigMap-backed alloc.Store. Create it with New, then Start.
type Store struct {
	client   kubernetes.Interface
	ns       string
	log      *zap.Logger
	wait     time.Duration
	hintWait time.Duration
	onDelete func()
	metrics  *Metrics
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	// handled reports when the event handler (which fills idx) has seen
	// the initial list; the informer's own HasSynced only covers its cache.
	handled cache.ResourceEventHandlerRegistration

	strings interned // see compact

	mu      sync.Mutex
	idx     *alloc.Index
	expect  map[string]expectation
	seq     uint64
	changed chan struct{} // closed and replaced on every delivered event
	synced  bool
}

var _ alloc.Store = (*Store)(nil)

// NewForConfig builds a clientset from cfg with raised rate limits and
// returns a Store over it.
func NewForConfig(cfg *rest.Config, opts Options) (*Store, error) {
	cs, err := kubernetes.NewForConfig(RaiseRateLimits(cfg))
	if err != nil {
		return nil, err
	}
	return New(cs, opts)
}

// New returns a Store using client, which should have raised rate limits
// (see RaiseRateLimits). Call Start before use.
func New(client kubernetes.Interface, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("configmap.New: nil client")
	}
	if opts.Namespace == "" {
		return nil, errors.New("configmap.New: namespace is required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	if opts.HintWait <= 0 {
		opts.HintWait = DefaultHintWait
	}
	s := &Store{
		client: client, ns: opts.Namespace, log: opts.Logger, wait: opts.WaitTimeout, hintWait: opts.HintWait, onDelete: opts.OnDelete,
		metrics: opts.Metrics, idx: alloc.NewIndex(), expect: map[string]expectation{}, changed: make(chan struct{}),
	}
	s.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(opts.Namespace))
	// Without the factory's namespace index: every reservation lives in
	// one namespace, so it would be one set of every key, and nothing here
	// lists by namespace.
	s.informer = s.factory.InformerFor(&corev1.ConfigMap{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredConfigMapInformer(c, opts.Namespace, resync, cache.Indexers{},
			func(o *metav1.ListOptions) { o.LabelSelector = Selector })
	})
	// The index keeps the decoded form; the cache keeps only what
	// identifies the object (see cached).
	if err := s.informer.SetTransform(s.compact); err != nil {
		return nil, err
	}
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.observe(obj, false) },
		UpdateFunc: func(_, obj any) { s.observe(obj, false) },
		DeleteFunc: func(obj any) { s.observe(obj, true) },
	})
	if err != nil {
		return nil, err
	}
	s.handled = reg
	return s, nil
}

// Start runs the informer until ctx ends and returns once the index holds
// the initial list (or with ctx's error). Handlers run behind the
// informer's cache: with thousands of reservations the cache reports synced
// while the index is still filling, and a read then would miss
// reservations (status saw half of 3,000 that way).
func (s *Store) Start(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced, s.handled.HasSynced) {
		return fmt.Errorf("reservation cache of namespace %s: %w", s.ns, errors.Join(alloc.ErrNotReady, ctx.Err()))
	}
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
	return nil
}

// Shutdown waits for the informer goroutines after Start's ctx has ended.
func (s *Store) Shutdown() { s.factory.Shutdown() }

// Ready is nil once the cache has synced; for /readyz.
func (s *Store) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return alloc.ErrNotReady
	}
	return nil
}

// Name is the ConfigMap name of ip: "ip-" + the address with "." and ":"
// replaced by "-" (10.96.0.12 → ip-10-96-0-12, fd00:10:96::1 →
// ip-fd00-10-96--1). Canonical text makes it deterministic; an IPv6 text
// ending in "::" is written "::0" so that the name ends alphanumeric as
// DNS-1123 requires.
func Name(ip netip.Addr) string {
	s := ip.Unmap().WithZone("").String()
	if strings.HasSuffix(s, "::") {
		s += "0"
	}
	return "ip-" + strings.NewReplacer(".", "-", ":", "-").Replace(s)
}

// Data keys of a reservation ConfigMap.
const (
	keyIP, keyPool, keyNamespace, keyName, keyGenerateName = "ip", "pool", "namespace", "name", "generateName"
	keyUID, keyRequestUID, keyState                        = "uid", "requestUID", "state"
	keyCreated, keyUpdated, keyExpires                     = "created", "updated", "expires"
)

func encode(ns string, r alloc.Reservation) *corev1.ConfigMap {
	data := map[string]string{
		keyIP: r.IP.String(), keyPool: r.Pool, keyNamespace: r.Owner.Namespace, keyState: string(r.State),
		keyCreated: formatTime(r.Created), keyUpdated: formatTime(r.Updated),
	}
	for k, v := range map[string]string{keyName: r.Owner.Name, keyGenerateName: r.Owner.GenerateName,
		keyUID: r.Owner.UID, keyRequestUID: r.Owner.RequestUID, keyExpires: formatTime(r.Expires)} {
		if v != "" {
			data[k] = v
		}
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: Name(r.IP), Namespace: ns, ResourceVersion: r.Version,
			Labels: map[string]string{
				LabelPool: r.Pool, LabelFamily: string(r.Family()), LabelState: string(r.State), LabelManagedBy: ManagedBy,
			},
		},
		Data: data,
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func decode(cm *corev1.ConfigMap) (alloc.Reservation, error) {
	d := cm.Data
	ip, err := netip.ParseAddr(d[keyIP])
	if err != nil {
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s: data.%s: %w", cm.Name, keyIP, err)
	}
	if Name(ip) != cm.Name {
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s: data.%s %s belongs in %s", cm.Name, keyIP, ip, Name(ip))
	}
	r := alloc.Reservation{
		IP: ip, Pool: d[keyPool], State: alloc.State(d[keyState]), Version: cm.ResourceVersion,
		Owner: alloc.Owner{Namespace: d[keyNamespace], Name: d[keyName], GenerateName: d[keyGenerateName], UID: d[keyUID], RequestUID: d[keyRequestUID]},
	}
	for _, f := range []struct {
		key string
		dst *time.Time
	}{{keyCreated, &r.Created}, {keyUpdated, &r.Updated}, {keyExpires, &r.Expires}} {
		if v := d[f.key]; v != "" {
			if *f.dst, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return alloc.Reservation{}, fmt.Errorf("ConfigMap %s: data.%s: %w", cm.Name, f.key, err)
			}
		}
	}
	switch r.State {
	case alloc.StatePending:
		r.State = alloc.StatePending // the constant, not the decoded copy
	case alloc.StateBound:
		r.State = alloc.StateBound
	case alloc.StateSticky:
		r.State = alloc.StateSticky
	default:
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s: unknown state %q", cm.Name, r.State)
	}
	return r, nil
}

// newer reports whether resourceVersion a is at or after b. The apiserver
// documents resourceVersions as opaque, but etcd-backed ones are integers
// ordered by commit (resourceVersion semantics, KEP-2568's comparison);
// unparseable ones only compare equal.
func newer(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x >= y
}

// cached is what the informer keeps of a reservation ConfigMap: the
// decoded reservation, which the index shares (alloc.Index.PutShared)
// instead of copying, and the store's namespace; the name follows from the
// address and the resourceVersion is the reservation's Version. The
// ConfigMap itself (data map, labels, uid, timestamps) would cost about
// three times as much per reservation, twice over with the index beside
// it; and it does not embed an ObjectMeta either (232 bytes, nearly all
// unused): at 25,000 reservations those fields and the index's copies were
// ~11 MiB of every replica's heap. A ConfigMap that does not decode is
// kept as a malformed instead.
type cached struct {
	namespace string // the store's own string, shared by every record
	r         alloc.Reservation
}

// GetObjectKind, DeepCopyObject: cached is a runtime.Object; nothing
// mutates one.
func (c *cached) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (c *cached) DeepCopyObject() runtime.Object   { x := *c; return &x }

// GetObjectMeta makes cached a metav1.ObjectMetaAccessor, which is how the
// informer reads its key and resourceVersion (a few times per event).
func (c *cached) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: Name(c.r.IP), Namespace: c.namespace, ResourceVersion: c.r.Version}
}

// malformed is what the informer keeps of a reservation ConfigMap that
// does not decode: enough to report it and settle expectations.
type malformed struct {
	name, namespace, rv string
	err                 error // decode's, reported when the event is handled
}

func (m *malformed) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (m *malformed) DeepCopyObject() runtime.Object   { x := *m; return &x }
func (m *malformed) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: m.name, Namespace: m.namespace, ResourceVersion: m.rv}
}

// compact is the informer's transform: ConfigMap → *cached (or
// *malformed). It is idempotent, as client-go requires. Strings every
// record repeats (namespace, pool, the owner's namespace; the state is
// decode's constant) are shared rather than one decoded copy each.
func (s *Store) compact(obj any) (any, error) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return obj, nil
	}
	ns := cm.Namespace
	if ns == s.ns {
		ns = s.ns
	}
	r, err := decode(cm)
	if err != nil {
		return &malformed{name: cm.Name, namespace: ns, rv: cm.ResourceVersion, err: err}, nil
	}
	r.Pool, r.Owner.Namespace = s.strings.intern(r.Pool), s.strings.intern(r.Owner.Namespace)
	return &cached{namespace: ns, r: r}, nil
}

// interned shares the strings many reservations repeat. It keeps at most
// maxInterned of them: pools and namespaces are few, and beyond that a
// string is simply not shared.
type interned struct {
	mu sync.Mutex
	m  map[string]string
}

const maxInterned = 4096

func (in *interned) intern(v string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.m[v]; ok {
		return s
	}
	if in.m == nil {
		in.m = map[string]string{}
	}
	if len(in.m) < maxInterned {
		in.m[v] = v
	}
	return v
}

// observe applies one informer event to the index and settles the
// expectations it satisfies.
func (s *Store) observe(obj any, deleted bool) {
	tombstone := false
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted, tombstone = t.Obj, true, true
	}
	if deleted && s.onDelete != nil {
		defer s.onDelete()
	}
	if _, ok := obj.(*corev1.ConfigMap); ok {
		obj, _ = s.compact(obj)
	}
	var name, rv string
	switch o := obj.(type) {
	case *cached:
		name, rv = Name(o.r.IP), o.r.Version
	case *malformed:
		name, rv = o.name, o.rv
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o := obj.(type) {
	case *malformed:
		s.log.Warn("ignoring malformed reservation ConfigMap", zap.Error(o.err))
	case *cached:
		if deleted {
			s.idx.Delete(o.r.IP)
		} else {
			s.idx.PutShared(&o.r)
		}
	}
	if e, ok := s.expect[name]; ok {
		switch {
		case e.any:
			delete(s.expect, name)
		case deleted && e.gone:
			delete(s.expect, name)
		case !deleted && !e.gone && newer(rv, e.rv):
			delete(s.expect, name)
		case !deleted && e.gone && rv != e.rv && newer(rv, e.rv):
			delete(s.expect, name) // re-created after our delete: the delete is behind us
		case deleted && !e.gone && (tombstone || newer(rv, e.rv)):
			// Deleted by someone else after our write: our write is behind
			// us. A watch DELETED event carries the revision of the delete,
			// so the delete of an older incarnation (delete, then our
			// re-create, events still in flight) is told apart and does not
			// settle the create; a relist tombstone means the object was
			// gone when the list ran, after our write returned.
			delete(s.expect, name)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// expectWrite registers a completed write of ours, unless the informer
// already delivered it (the watch event can beat the API response). owner is
// the Owner.Key() of the reservation written (or deleted).
func (s *Store) expectWrite(ip netip.Addr, rv string, gone bool, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := Name(ip)
	cur, ok := s.idx.Get(ip)
	_, pending := s.expect[name]
	switch {
	case !gone && ok && newer(cur.Version, rv):
		return
	case gone && !ok && !pending:
		// Absent and no write of ours in flight: the delete is visible.
		// (With a create in flight, absence only means "not seen yet".)
		return
	case gone && ok && cur.Version != rv && newer(cur.Version, rv):
		return
	}
	prev := ""
	if ok {
		prev = cur.Owner.Key()
	}
	s.seq++
	s.expect[name] = expectation{seq: s.seq, rv: rv, gone: gone, owner: owner, prev: prev}
}

// expectExisting registers an object another writer created that the cache
// does not show yet.
func (s *Store) expectExisting(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := Name(ip)
	if _, ok := s.idx.Get(ip); ok {
		return
	}
	if _, pending := s.expect[name]; pending {
		return
	}
	s.seq++
	s.expect[name] = expectation{seq: s.seq, any: true}
}

// absent maps a versionless Update/Delete to the contract's error: the
// reservation is either not there (ErrNotFound) or not the one the caller
// read (ErrConflict).
func (s *Store) absent(ctx context.Context, ip netip.Addr, verb string) error {
	var ok bool
	if err := s.caughtUp(ctx, named(Name(ip)), func() { _, ok = s.idx.Get(ip) }); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("ConfigMap %s/%s: %w", s.ns, Name(ip), alloc.ErrNotFound)
	}
	// An empty resourceVersion would make the apiserver write
	// unconditionally: never what a compare-and-swap caller means.
	return fmt.Errorf("ConfigMap %s/%s: %s without a version: %w", s.ns, Name(ip), verb, alloc.ErrConflict)
}

// DefaultHintWait bounds the wait for objects learnt of through
// AlreadyExists. They are a hint (the caller already excludes the lost
// address), and the object may be gone before the cache ever shows it, so
// past this the read goes on. A watch event normally lands in milliseconds.
const DefaultHintWait = time.Second

// A waitFor selects the expectations a read depends on: a read waits only
// for the writes that can change its answer, so that one request's read is
// not held up by the watch delivering every other request's writes.
type waitFor func(name string, e expectation) bool

// all: List and Taken depend on every write.
func all(string, expectation) bool { return true }

// named: Get(ip) depends on writes of that object only (hints included, so
// that an address lost to another writer reads as that writer's).
func named(want string) waitFor {
	return func(name string, _ expectation) bool { return name == want }
}

// ownedBy: ByOwner(key) depends on our writes that give key an address or
// take one from it. Writes for other owners (the other requests in flight,
// the reconciler binding other Services) and other writers' objects cannot
// change its answer.
func ownedBy(key string) waitFor {
	return func(_ string, e expectation) bool { return !e.any && (e.owner == key || e.prev == key) }
}

// caughtUp waits until the informer has delivered every write this store
// completed before the call that wait selects, then runs fn under the lock.
func (s *Store) caughtUp(ctx context.Context, wait waitFor, fn func()) error {
	deadline := time.NewTimer(s.wait)
	defer deadline.Stop()
	hints := time.NewTimer(min(s.hintWait, s.wait))
	defer hints.Stop()
	hintsDone := false
	s.mu.Lock()
	limit := s.seq
	for {
		if !s.synced {
			s.mu.Unlock()
			return fmt.Errorf("reservation cache not synced: %w", alloc.ErrNotReady)
		}
		var behind []string
		for name, e := range s.expect {
			if e.seq > limit || !wait(name, e) {
				continue
			}
			if e.any && hintsDone {
				delete(s.expect, name)
				continue
			}
			behind = append(behind, name)
		}
		if len(behind) == 0 {
			fn()
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-hints.C:
			hintsDone = true
		case <-ctx.Done():
			return fmt.Errorf("waiting for the cache to show %d own write(s): %w", len(behind), errors.Join(alloc.ErrNotReady, ctx.Err()))
		case <-deadline.C:
			// Forget them so that the store recovers (e.g. the informer
			// missed a create+delete during a relist); this read fails.
			s.mu.Lock()
			for _, n := range behind {
				if e, ok := s.expect[n]; ok && e.seq <= limit {
					delete(s.expect, n)
				}
			}
			s.mu.Unlock()
			s.log.Warn("cache did not show own writes in time", zap.Strings("configMaps", behind), zap.Duration("waited", s.wait))
			return fmt.Errorf("cache did not show own write(s) %v within %s: %w", behind, s.wait, alloc.ErrNotReady)
		}
		s.mu.Lock()
	}
}

// Get implements alloc.Store.
func (s *Store) Get(ctx context.Context, ip netip.Addr) (r alloc.Reservation, ok bool, err error) {
	err = s.caughtUp(ctx, named(Name(ip)), func() { r, ok = s.idx.Get(ip) })
	return r, ok, err
}

// GetLive implements alloc.LiveReader: a GET of the ConfigMap, past the
// cache.
func (s *Store) GetLive(ctx context.Context, ip netip.Addr) (alloc.Reservation, bool, error) {
	start := time.Now()
	cm, err := s.client.CoreV1().ConfigMaps(s.ns).Get(ctx, Name(ip), metav1.GetOptions{})
	s.metrics.observe("get", start, err)
	if apierrors.IsNotFound(err) {
		return alloc.Reservation{}, false, nil
	}
	if err != nil {
		return alloc.Reservation{}, false, fmt.Errorf("reading ConfigMap %s/%s: %w", s.ns, Name(ip), err)
	}
	r, err := decode(cm)
	if err != nil {
		return alloc.Reservation{}, false, err
	}
	return r, true, nil
}

var _ alloc.LiveReader = (*Store)(nil)

// ByOwner implements alloc.Store.
func (s *Store) ByOwner(ctx context.Context, key string) (rs []alloc.Reservation, err error) {
	err = s.caughtUp(ctx, ownedBy(key), func() { rs = s.idx.ByOwner(key) })
	return rs, err
}

// List implements alloc.Store.
func (s *Store) List(ctx context.Context) (rs []alloc.Reservation, err error) {
	err = s.caughtUp(ctx, all, func() { rs = s.idx.List() })
	return rs, err
}

// ListShared implements alloc.SharedLister: the informer's own records.
func (s *Store) ListShared(ctx context.Context) (rs []*alloc.Reservation, err error) {
	err = s.caughtUp(ctx, all, func() { rs = s.idx.ListShared() })
	return rs, err
}

// Taken implements alloc.Store.
func (s *Store) Taken(ctx context.Context, fn func(*alloc.IPSet)) error {
	return s.caughtUp(ctx, all, func() { fn(s.idx.Taken()) })
}

// TakenNow implements alloc.CandidateView: the cache as it is, without
// waiting for the watch to deliver our own writes. The allocator chooses
// candidates from it and keeps its own recent writes and lost races aside
// until the cache shows them; the apiserver's AlreadyExists keeps the
// choice safe whatever the cache lags.
func (s *Store) TakenNow(fn func(*alloc.IPSet)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return fmt.Errorf("reservation cache not synced: %w", alloc.ErrNotReady)
	}
	fn(s.idx.Taken())
	return nil
}

// Create implements alloc.Store.
func (s *Store) Create(ctx context.Context, r alloc.Reservation) (alloc.Reservation, error) {
	if !r.IP.IsValid() {
		return alloc.Reservation{}, errors.New("configmap: create: invalid IP")
	}
	r.Version = ""
	start := time.Now()
	cm, err := s.client.CoreV1().ConfigMaps(s.ns).Create(ctx, encode(s.ns, r), metav1.CreateOptions{})
	s.metrics.observe("create", start, err)
	if apierrors.IsAlreadyExists(err) {
		// Our cache is behind the apiserver. Make the next read wait until
		// it shows this object, and with it (watch order) every write that
		// preceded it, instead of deciding again on the same stale view.
		s.expectExisting(r.IP)
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s/%s: %w", s.ns, Name(r.IP), alloc.ErrExists)
	}
	if err != nil {
		return alloc.Reservation{}, fmt.Errorf("creating ConfigMap %s/%s: %w", s.ns, Name(r.IP), err)
	}
	s.expectWrite(r.IP, cm.ResourceVersion, false, r.Owner.Key())
	r.Version = cm.ResourceVersion
	return r, nil
}

// Update implements alloc.Store.
func (s *Store) Update(ctx context.Context, r alloc.Reservation) (alloc.Reservation, error) {
	if r.Version == "" {
		return alloc.Reservation{}, s.absent(ctx, r.IP, "update")
	}
	start := time.Now()
	cm, err := s.client.CoreV1().ConfigMaps(s.ns).Update(ctx, encode(s.ns, r), metav1.UpdateOptions{})
	s.metrics.observe("update", start, err)
	switch {
	case apierrors.IsConflict(err):
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s/%s: %w", s.ns, Name(r.IP), alloc.ErrConflict)
	case apierrors.IsNotFound(err):
		return alloc.Reservation{}, fmt.Errorf("ConfigMap %s/%s: %w", s.ns, Name(r.IP), alloc.ErrNotFound)
	case err != nil:
		return alloc.Reservation{}, fmt.Errorf("updating ConfigMap %s/%s: %w", s.ns, Name(r.IP), err)
	}
	s.expectWrite(r.IP, cm.ResourceVersion, false, r.Owner.Key())
	r.Version = cm.ResourceVersion
	return r, nil
}

// Delete implements alloc.Store.
func (s *Store) Delete(ctx context.Context, r alloc.Reservation) error {
	if r.Version == "" {
		return s.absent(ctx, r.IP, "delete")
	}
	name := Name(r.IP)
	start := time.Now()
	err := s.client.CoreV1().ConfigMaps(s.ns).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{ResourceVersion: &r.Version},
	})
	s.metrics.observe("delete", start, err)
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("ConfigMap %s/%s: %w", s.ns, name, alloc.ErrConflict)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("ConfigMap %s/%s: %w", s.ns, name, alloc.ErrNotFound)
	case err != nil:
		return fmt.Errorf("deleting ConfigMap %s/%s: %w", s.ns, name, err)
	}
	s.expectWrite(r.IP, r.Version, true, r.Owner.Key())
	return nil
}
