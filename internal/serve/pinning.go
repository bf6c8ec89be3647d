package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/dualstack-webhook/dualstack-webhook/reconcile"
	"github.com/dualstack-webhook/dualstack-webhook/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// eventCacheKeys bounds each of the event correlator's LRU caches.
const eventCacheKeys = 256

// Leader election timings: client-go's and kube-controller-manager's
// defaults. A new leader takes over at most LeaseDuration after the old one
// vanished; the reconciler is not on the admission path, so that delay only
// postpones repairs.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

// pinning is the allocator and what keeps it true: built by startPinning,
// used by Run.
type pinning struct {
	alloc *alloc.Allocator
	ready []webhook.Check
	// apiserver gates the reviews that need the allocator (nil: --dev).
	apiserver func() error
}

// allocOptions are the allocator options every mode shares.
func allocOptions(cfg *Config, log *zap.Logger) alloc.Options {
	o := alloc.Options{Logger: log.Named("alloc"), Retention: cfg.Retention, PendingGrace: cfg.PendingGrace, Spread: cfg.LowestSpread}
	if cfg.Retention == 0 {
		o.Retention = -1 // alloc reads 0 as "default"; the flag's 0 means "at once"
	}
	return o
}

// startDevPinning: memory store, pools from --pools-file or the static band
// of --service-cidrs, no reconciler (there are no Services to watch).
func startDevPinning(cfg *Config, log *zap.Logger, reg prometheus.Registerer) (*pinning, error) {
	w := &reconcile.PoolWatcher{Log: log.Named("pools"), StaticCIDRs: cfg.ServiceCIDRs, File: cfg.PoolsFile}
	pools, err := w.Initial(context.Background())
	if err != nil {
		return nil, err
	}
	st := memory.New()
	opts := allocOptions(cfg, log)
	opts.External = alloc.KubernetesServiceHolder(cfg.ServiceCIDRs)
	a, err := alloc.New(st, pools, opts)
	if err != nil {
		return nil, err
	}
	if _, err := reconcile.NewMetrics(reg, a.Pools, st); err != nil {
		return nil, err
	}
	return &pinning{alloc: a}, nil
}

// startPinning builds, for a cluster, the ConfigMap store, the allocator fed
// by the Service/IPAddress caches, the pool watcher and the (leader-elected)
// reconciler, and starts them. Every replica serves admission with its own
// allocator; uniqueness across replicas is the store's (AlreadyExists on
// one ConfigMap per address).
func startPinning(ctx context.Context, cfg *Config, rc *rest.Config, cs kubernetes.Interface, caches *clusterCaches, probe *apiserverProbe, log *zap.Logger, reg prometheus.Registerer) (*pinning, func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) (*pinning, func(), error) { stop(); return nil, nil, err }

	// The pools ConfigMap, by name, in our namespace.
	cmFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.PoolsConfigMap).String()
		}))
	cmInformer := cmFactory.Core().V1().ConfigMaps()
	cmInf := cmInformer.Informer()
	var cmLister corev1listers.ConfigMapLister = cmInformer.Lister()
	cmFactory.Start(ctx.Done())
	stops = append(stops, cmFactory.Shutdown)

	// The state store, with its own raised rate limits (one write per
	// reservation).
	// Deleted state is rebuilt at once: the store's informer kicks the
	// reconciler (set below, once it exists).
	var rec atomic.Pointer[reconcile.Reconciler]
	onDelete := func() {
		if r := rec.Load(); r != nil {
			r.Kick()
		}
	}
	storeMetrics, err := configmap.NewMetrics(reg)
	if err != nil {
		return fail(err)
	}
	st, err := configmap.NewForConfig(rc, configmap.Options{Namespace: cfg.Namespace, Logger: log.Named("store"), OnDelete: onDelete, Metrics: storeMetrics})
	if err != nil {
		return fail(err)
	}
	stctx, cancelStore := context.WithCancel(ctx)
	stops = append(stops, func() { cancelStore(); st.Shutdown() })
	// Its list runs beside the Service and IPAddress lists below: at
	// 20,000 Services each is tens of thousands of objects, and a
	// restarted replica is Ready only once all are in.
	stStarted := make(chan error, 1)
	go func() { stStarted <- st.Start(stctx) }()

	caches.factory.Start(ctx.Done())
	synced := []cache.InformerSynced{caches.servicesSynced, caches.ipaddrs.HasSynced, cmInf.HasSynced}
	if caches.cidrs != nil {
		synced = append(synced, caches.cidrs.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fail(fmt.Errorf("waiting for the Service, IPAddress, ServiceCIDR and pools ConfigMap caches: %w", ctx.Err()))
	}

	if err := <-stStarted; err != nil {
		return fail(fmt.Errorf("starting the reservation store: %w", err))
	}

	// Events on Services and on the pools ConfigMap. The correlator's
	// caches (aggregation, spam filter, last-seen) default to 4096 keys
	// each, and nearly every event of the reconciler has a key of its own
	// (one Service UID, one transition): under the soak suite's churn
	// (e2e/soak) the leader's heap grew by 8 MiB in two minutes, RSS 13 %
	// past the warm-up, until they would be full. A few hundred keys still
	// fold a burst of repeats on one Service.
	bc := record.NewBroadcaster(record.WithContext(ctx), record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: eventCacheKeys}))
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	stops = append(stops, bc.Shutdown)
	var recorder record.EventRecorder = bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "dualstack-webhook"})
	if cfg.Events == EventsWarnings {
		recorder = warningsOnly{recorder}
	}
	poolMetrics, err := reconcile.NewPoolMetrics(reg)
	if err != nil {
		return fail(err)
	}

	w := &reconcile.PoolWatcher{
		Recorder:    recorder,
		Metrics:     poolMetrics,
		Log:         log.Named("pools"),
		StaticCIDRs: cfg.ServiceCIDRs,
		ConfigMaps:  cmLister,
		Namespace:   cfg.Namespace,
		Name:        cfg.PoolsConfigMap,
		File:        cfg.PoolsFile,
	}
	if cfg.PoolsFile == "" {
		// The last document applied from the ConfigMap, for a replica
		// started while it is absent or unusable (RBAC: the chart's
		// configmaps rule in the webhook's namespace).
		w.Record = &reconcile.ConfigMapRecord{Client: cs.CoreV1(), Namespace: cfg.Namespace, Pools: cfg.PoolsConfigMap}
	}
	if caches.cidrs != nil {
		w.ServiceCIDRs = caches.cidrLister
	}
	pools, err := w.Initial(ctx)
	if err != nil {
		return fail(err)
	}
	opts := allocOptions(cfg, log)
	// Expiries in the apiserver's time: a replica whose clock jumped
	// forward must not free other replicas' pending reservations, nor
	// sticky ones, early.
	clk := probe.Clock()
	opts.Clock = clk
	opts.External = reconcile.Holder(caches.serviceIPs, caches.ipaddrLister)
	// A requested address the caches show held is re-read live, so a
	// Service may take an address the moment the apiserver freed it.
	ipaddrs := cs.NetworkingV1().IPAddresses()
	opts.ConfirmExternal = reconcile.LiveHolder(func(ctx context.Context, name string) (*networkingv1.IPAddress, error) {
		return ipaddrs.Get(ctx, name, metav1.GetOptions{})
	})
	opts.Subjects = subjects(caches)
	a, err := alloc.New(st, pools, opts)
	if err != nil {
		return fail(err)
	}
	metrics, err := reconcile.NewMetrics(reg, a.Pools, st)
	if err != nil {
		return fail(err)
	}

	// Every replica follows the pools ConfigMap and the ServiceCIDRs.
	apply := func() {
		if err := w.Apply(ctx, a); err != nil {
			log.Error("pools change not applied; the pools in force stay", zap.Error(err))
		}
	}
	poolEvents := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { apply() },
		UpdateFunc: func(any, any) { apply() },
		DeleteFunc: func(any) { apply() },
	}
	if _, err := cmInf.AddEventHandler(poolEvents); err != nil {
		return fail(err)
	}
	if caches.cidrs != nil {
		if _, err := caches.cidrs.AddEventHandler(poolEvents); err != nil {
			return fail(err)
		}
	}

	r, err := reconcile.New(reconcile.Options{
		Log:       log.Named("reconcile"),
		Allocator: a,
		Store:     st,
		// Without labels: the reconciler never reads them (its full sync
		// reads the cached SlimServices themselves).
		Services: reconcile.NewSlimServiceLister(caches.services.GetIndexer(), false),
		GetService: func(ctx context.Context, ns, name string) (*corev1.Service, error) {
			return cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		},
		// Not before the clock was compared with the apiserver's: the
		// first sync would judge expiries by a clock that may be off.
		Synced: func() bool {
			_, known := probe.Skew()
			return caches.servicesSynced() && st.Ready() == nil && known
		},
		Clock:    clk,
		Recorder: recorder,
		Metrics:  metrics,
		Interval: cfg.ReconcileInterval,
	})
	if err != nil {
		return fail(err)
	}
	rec.Store(r)
	// A Service event syncs that Service only; full syncs come with the
	// interval, the next expiry and deleted state (onDelete above).
	if _, err := caches.services.AddEventHandler(reconcile.ServiceEvents(r)); err != nil {
		return fail(err)
	}

	done := make(chan struct{})
	stops = append(stops, func() { <-done })
	go func() {
		defer close(done)
		if !cfg.LeaderElection {
			r.Run(ctx)
			return
		}
		runElected(ctx, cfg, cs, log.Named("leader"), r.Run)
	}()

	return &pinning{
		alloc:     a,
		ready:     []webhook.Check{{Name: "reservations", Func: st.Ready}, {Name: "apiserver", Func: probe.Ready}},
		apiserver: probe.Ready,
	}, stop, nil
}

// subjects finds the live Service of a reservation, with its Namespace's
// labels, in the informer caches, so that a pools change cannot leave a
// bound Service outside its pool's selectors. A cache miss (a Service
// deleted meanwhile) means nothing to check; a Namespace missing from the
// cache means no namespace labels, like admission assumes.
func subjects(caches *clusterCaches) alloc.SubjectFunc {
	return func(o alloc.Owner) (alloc.Subject, bool) {
		if o.Name == "" {
			return alloc.Subject{}, false
		}
		svc, err := caches.serviceLister.Services(o.Namespace).Get(o.Name)
		if err != nil {
			return alloc.Subject{}, false
		}
		s := alloc.Subject{Namespace: o.Namespace, Name: o.Name, Labels: svc.Labels}
		if ns, err := caches.nsLister.Get(o.Namespace); err == nil {
			s.NamespaceLabels = ns.Labels
		}
		return s, true
	}
}

// runElected runs fn while this replica holds the reconciler Lease, and
// competes for it again after losing it, until ctx ends.
func runElected(ctx context.Context, cfg *Config, cs kubernetes.Interface, log *zap.Logger, fn func(context.Context)) {
	id := identity()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: LeaseName},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   leaseDuration,
			RenewDeadline:   renewDeadline,
			RetryPeriod:     retryPeriod,
			ReleaseOnCancel: true,
			Name:            LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading: reconciler active", zap.String("identity", id))
					fn(ctx)
				},
				OnStoppedLeading: func() { log.Info("not leading: reconciler idle", zap.String("identity", id)) },
			},
		})
		if err != nil {
			log.Error("leader election misconfigured; reconciler not running", zap.Error(err))
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
}

// identity names this replica in the Lease: the pod name when the chart
// provides it, plus randomness so that two processes never share one.
func identity() string {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "_" + hex.EncodeToString(b)
}

// warningsOnly passes on Warning Events and drops the rest (--events=warnings).
type warningsOnly struct{ record.EventRecorder }

func (w warningsOnly) Event(obj runtime.Object, typ, reason, msg string) {
	if typ == corev1.EventTypeWarning {
		w.EventRecorder.Event(obj, typ, reason, msg)
	}
}

func (w warningsOnly) Eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	if typ == corev1.EventTypeWarning {
		w.EventRecorder.Eventf(obj, typ, reason, format, args...)
	}
}

func (w warningsOnly) AnnotatedEventf(obj runtime.Object, annotations map[string]string, typ, reason, format string, args ...any) {
	if typ == corev1.EventTypeWarning {
		w.EventRecorder.AnnotatedEventf(obj, annotations, typ, reason, format, args...)
	}
}
