package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corev1listers "k8s.io/client-go/listers/core/v1"
	networkingv1listers "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/record"
)

// IPAddressGetter reads IPAddress objects (networking.k8s.io/v1) by name,
// the address; a networkingv1listers.IPAddressLister is one.
type IPAddressGetter interface {
	Get(name string) (*networkingv1.IPAddress, error)
}

// Holder is alloc.Options.External: an address is held when a live Service
// (services, see ServiceIPs) or an IPAddress object (networking.k8s.io/v1,
// the apiserver's own allocation record, named by the address) has it. The
// IPAddress check also covers Services the webhook never sees (excluded
// namespaces) whose watch event has not arrived yet. Either source may be
// nil.
func Holder(services *ServiceIPs, ipaddrs IPAddressGetter) alloc.HolderFunc {
	return func(ip netip.Addr) (string, bool) {
		if services != nil {
			if key, ok := services.Holder(ip); ok {
				return key, true
			}
		}
		if ipaddrs != nil {
			if a, err := ipaddrs.Get(ip.String()); err == nil && a != nil {
				if p := a.Spec.ParentRef; p != nil {
					if p.Resource == "services" && p.Group == "" {
						return p.Namespace + "/" + p.Name, true
					}
					return p.Resource + "/" + p.Namespace + "/" + p.Name, true
				}
				return "IPAddress/" + a.Name, true
			}
		}
		return "", false
	}
}

// PoolApplier is what PoolWatcher needs of *alloc.Allocator.
type PoolApplier interface {
	ApplyConfig(ctx context.Context, c *alloc.PoolConfig, cidrs []netip.Prefix) error
}

// PoolWatcher derives the pools in force from the pools ConfigMap (or file)
// and the cluster's ServiceCIDRs, and re-applies them when either changes.
// Every replica runs one: admission uses the pools.
type PoolWatcher struct {
	Log *zap.Logger
	// StaticCIDRs are --service-cidrs; when empty, ServiceCIDRs is read.
	StaticCIDRs  []netip.Prefix
	ServiceCIDRs networkingv1listers.ServiceCIDRLister
	// ConfigMaps, Namespace and Name locate the pools ConfigMap; File, when
	// set, is read instead.
	ConfigMaps      corev1listers.ConfigMapLister
	Namespace, Name string
	File            string
	// Recorder, when set, publishes a Warning Event on the pools ConfigMap
	// when a change of it is not applied, saying why.
	Recorder record.EventRecorder
	// Metrics, when set, counts the changes not applied and says whether
	// the pools in force differ from the ConfigMap.
	Metrics *PoolMetrics
	// Record, when set, keeps the last document applied from the ConfigMap
	// beyond this process: a replica started while the ConfigMap is absent
	// or unusable starts from it instead of the static band, so that a
	// rolling restart does not change what is handed out.
	Record PoolRecord

	mu   sync.Mutex
	last string
	// recorded is the document Record holds, as far as this replica
	// knows ("" and !haveRecorded: not known).
	recorded     string
	haveRecorded bool
	// fromConfigMap: the pools in force came from the ConfigMap (not from
	// its absence), so its deletion is an accident to survive.
	fromConfigMap bool
	rejected      string // the last change not applied, reported once
}

// ReasonPoolsNotApplied is the Event reason on the pools ConfigMap when a
// change of it is refused, unusable or the ConfigMap is deleted.
const ReasonPoolsNotApplied = "PoolsNotApplied"

// ErrPoolsDeleted: the pools ConfigMap was deleted while its pools were in
// force. They stay: a deleted ConfigMap is far more often an accident (a
// namespace cleanup, a GitOps prune) than a wish to re-address every new
// Service from the static band, and every replica must keep agreeing on
// the pools. To return to the static band, write an empty document.
var ErrPoolsDeleted = errors.New("the pools ConfigMap was deleted; the pools in force stay (to return to the static band, write a document without pools)")

// PoolMetrics are the pool watcher's metrics.
type PoolMetrics struct {
	// Rejected counts changes of the pools ConfigMap not applied, by
	// reason: deleted, invalid (does not parse or compile, or would orphan
	// an address in use) or error (the reservations could not be read).
	Rejected *prometheus.CounterVec
	// Stale is 1 while the pools in force are not what the ConfigMap says.
	Stale prometheus.Gauge
}

// NewPoolMetrics registers the pool watcher's metrics on reg.
func NewPoolMetrics(reg prometheus.Registerer) (*PoolMetrics, error) {
	m := &PoolMetrics{
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "dualstack_webhook", Name: "pools_rejected_total",
			Help: "Changes of the pools ConfigMap not applied (the pools in force stay), by reason: deleted, invalid, error."}, []string{"reason"}),
		Stale: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "dualstack_webhook", Name: "pools_stale",
			Help: "1 while the pools in force are not what the pools ConfigMap says (deleted, invalid or refused; see the PoolsNotApplied Event)."}),
	}
	for _, c := range []prometheus.Collector{m.Rejected, m.Stale} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// defaultServiceCIDR is the ServiceCIDR the apiserver creates from its
// --service-cluster-ip-range; its order is the cluster's family order.
const defaultServiceCIDR = "kubernetes"

// CIDRs are the cluster's service ranges: --service-cidrs, or every
// ServiceCIDR object not being deleted (the apiserver allocates from none
// of those, docs/dualstack-rules.md §5.3), the default one first.
func (w *PoolWatcher) CIDRs() ([]netip.Prefix, error) {
	if len(w.StaticCIDRs) > 0 {
		return w.StaticCIDRs, nil
	}
	if w.ServiceCIDRs == nil {
		return nil, errors.New("no service CIDRs: pass --service-cidrs")
	}
	list, err := w.ServiceCIDRs.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	slices.SortFunc(list, func(a, b *networkingv1.ServiceCIDR) int {
		switch {
		case a.Name == b.Name:
			return 0
		case a.Name == defaultServiceCIDR:
			return -1
		case b.Name == defaultServiceCIDR:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []netip.Prefix
	for _, sc := range list {
		if sc.DeletionTimestamp != nil {
			continue
		}
		for _, c := range sc.Spec.CIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("ServiceCIDR %s: %w", sc.Name, err)
			}
			if !slices.Contains(out, p.Masked()) {
				out = append(out, p.Masked())
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no ServiceCIDR objects (networking.k8s.io/v1, Kubernetes ≥ 1.33; else pass --service-cidrs)")
	}
	return out, nil
}

// Load reads the pool document and the CIDRs. An absent ConfigMap (or none
// configured) is the empty document: the static band of each ServiceCIDR.
func (w *PoolWatcher) Load() (*alloc.PoolConfig, []netip.Prefix, error) {
	c, cidrs, _, err := w.load()
	return c, cidrs, err
}

// source is where a loaded document came from.
type source struct {
	// present: the ConfigMap exists (its document, possibly empty, is
	// the one loaded).
	present bool
	// doc is the ConfigMap's pools.yaml as written ("" when the key is
	// missing: the empty document).
	doc string
}

// fromConfigMaps: the pools come from a ConfigMap (not a file, not
// nothing), so its absence can be an accident and a record applies.
func (w *PoolWatcher) fromConfigMaps() bool {
	return w.File == "" && w.ConfigMaps != nil && w.Name != ""
}

// load is Load, also telling whether the document came from the
// ConfigMap, and its text.
func (w *PoolWatcher) load() (*alloc.PoolConfig, []netip.Prefix, source, error) {
	cidrs, err := w.CIDRs()
	if err != nil {
		return nil, nil, source{}, err
	}
	switch {
	case w.File != "":
		c, err := alloc.LoadConfigFile(w.File)
		return c, cidrs, source{}, err
	case w.fromConfigMaps():
		cm, err := w.ConfigMaps.ConfigMaps(w.Namespace).Get(w.Name)
		if apierrors.IsNotFound(err) {
			return emptyConfig(), cidrs, source{}, nil
		}
		if err != nil {
			return nil, nil, source{}, err
		}
		c, err := alloc.ConfigFromConfigMap(cm)
		return c, cidrs, source{present: true, doc: cm.Data[alloc.ConfigMapKey]}, err
	}
	return emptyConfig(), cidrs, source{}, nil
}

func emptyConfig() *alloc.PoolConfig {
	return &alloc.PoolConfig{APIVersion: alloc.ConfigAPIVersion, Kind: alloc.ConfigKind}
}

// deletedError is the deletion of the ConfigMap whose pools are in force,
// with the same text at start and later, so it is reported once.
func (w *PoolWatcher) deletedError() error {
	return fmt.Errorf("ConfigMap %s/%s: %w", w.Namespace, w.Name, ErrPoolsDeleted)
}

// Initial compiles the pools to start with: the ConfigMap's (recorded, see
// Record), or, when it is absent or unusable and a record of the last
// document applied from it exists, the recorded one (reported like a
// change not applied: stale, Event, metric). Without a record, an absent
// ConfigMap is the static band, and a document that does not compile is
// logged and replaced by the static band, so that a bad edit (the pools
// guard is fail-open) never keeps the webhook from starting; addresses
// already reserved stay taken whatever the pools say.
func (w *PoolWatcher) Initial(ctx context.Context) (*alloc.Pools, error) {
	c, cidrs, src, err := w.load()
	if err != nil && cidrs == nil {
		return nil, err
	}
	if err == nil && (src.present || !w.fromConfigMaps()) {
		p, cerr := alloc.Compile(c, cidrs)
		if cerr == nil {
			w.remember(c, cidrs, src.present)
			if src.present {
				w.record(ctx, src.doc)
			}
			return p, nil
		}
		err = cerr
	}
	reason := "invalid"
	if err == nil {
		reason, err = "deleted", w.deletedError()
	}
	if p, rc, ok := w.fromRecord(ctx, cidrs); ok {
		w.logger().Warn("pools ConfigMap absent or unusable at start; pinning from the last pools applied from it, as recorded",
			zap.String("reason", reason), zap.String("record", w.Namespace+"/"+RecordName(w.Name)), zap.Error(err))
		w.remember(rc, cidrs, true)
		w.reject(reason, err)
		return p, nil
	}
	if reason == "deleted" {
		// Never created (or no record of it): the static band, as ever.
		w.remember(c, cidrs, false)
		return alloc.Compile(c, cidrs)
	}
	w.logger().Error("pools document unusable at start; pinning from the static band until it is fixed", zap.Error(err))
	w.reject("invalid", err)
	return alloc.Compile(nil, cidrs)
}

// fromRecord compiles the recorded document, if there is one and it still
// compiles against cidrs (a record that does not is logged and ignored).
func (w *PoolWatcher) fromRecord(ctx context.Context, cidrs []netip.Prefix) (*alloc.Pools, *alloc.PoolConfig, bool) {
	if w.Record == nil || !w.fromConfigMaps() {
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	doc, ok, err := w.Record.Get(ctx)
	if err != nil {
		w.logger().Error("reading the record of the last applied pools", zap.Error(err))
		return nil, nil, false
	}
	if !ok {
		return nil, nil, false
	}
	c := emptyConfig()
	if doc != "" {
		if c, err = alloc.ParseConfig([]byte(doc)); err != nil {
			w.logger().Error("the record of the last applied pools does not parse; ignored", zap.Error(err))
			return nil, nil, false
		}
	}
	p, err := alloc.Compile(c, cidrs)
	if err != nil {
		w.logger().Error("the record of the last applied pools does not compile against the ServiceCIDRs; ignored", zap.Error(err))
		return nil, nil, false
	}
	w.mu.Lock()
	w.recorded, w.haveRecorded = doc, true
	w.mu.Unlock()
	return p, c, true
}

// recordTimeout bounds one read or write of the record.
const recordTimeout = 5 * time.Second

// record writes doc, the document just applied from the ConfigMap, to the
// Record, unless this replica knows it is there already. A failure is
// logged and retried on the next Apply.
func (w *PoolWatcher) record(ctx context.Context, doc string) {
	if w.Record == nil {
		return
	}
	w.mu.Lock()
	known := w.haveRecorded && w.recorded == doc
	w.mu.Unlock()
	if known {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := w.Record.Put(ctx, doc); err != nil {
		w.logger().Error("recording the applied pools (a replica started while the ConfigMap is absent or unusable would not find them)", zap.Error(err))
		return
	}
	w.mu.Lock()
	w.recorded, w.haveRecorded = doc, true
	w.mu.Unlock()
}

// Apply re-reads the document and the CIDRs and applies them if they
// changed. A rejected change (invalid, or orphaning addresses in use) and
// the deletion of a ConfigMap whose pools are in force (ErrPoolsDeleted)
// keep the pools in force and are returned, reported once each by an
// Event and the metrics.
func (w *PoolWatcher) Apply(ctx context.Context, a PoolApplier) error {
	c, cidrs, src, err := w.load()
	switch {
	case err != nil && cidrs == nil:
		w.reject("error", err)
		return err
	case err != nil:
		w.reject("invalid", err)
		return err
	}
	if !src.present && w.fromConfigMaps() {
		w.mu.Lock()
		deleted := w.fromConfigMap
		w.mu.Unlock()
		if deleted {
			err = w.deletedError()
			w.reject("deleted", err)
			return err
		}
	}
	key := configKey(c, cidrs)
	w.mu.Lock()
	same := key == w.last
	w.mu.Unlock()
	if same {
		w.accepted()
		if src.present {
			// The same pools, maybe in other words (comments), or a
			// record that could not be written before.
			w.record(ctx, src.doc)
		}
		return nil
	}
	if err := a.ApplyConfig(ctx, c, cidrs); err != nil {
		reason := "error"
		var ce *alloc.ConfigError
		if errors.As(err, &ce) {
			reason = "invalid"
		}
		w.reject(reason, err)
		return err
	}
	w.remember(c, cidrs, src.present)
	if src.present {
		w.record(ctx, src.doc)
	}
	return nil
}

func (w *PoolWatcher) remember(c *alloc.PoolConfig, cidrs []netip.Prefix, fromConfigMap bool) {
	w.mu.Lock()
	w.last = configKey(c, cidrs)
	w.fromConfigMap = fromConfigMap
	w.mu.Unlock()
	w.accepted()
}

// accepted records that the pools in force are the ConfigMap's.
func (w *PoolWatcher) accepted() {
	w.mu.Lock()
	w.rejected = ""
	w.mu.Unlock()
	if w.Metrics != nil {
		w.Metrics.Stale.Set(0)
	}
}

// reject reports a change not applied: counted, flagged and published
// once per distinct error (every ServiceCIDR event re-reads the document).
func (w *PoolWatcher) reject(reason string, err error) {
	msg := oneLine(err.Error())
	w.mu.Lock()
	repeat := msg == w.rejected
	w.rejected = msg
	w.mu.Unlock()
	if w.Metrics != nil {
		w.Metrics.Stale.Set(1)
	}
	if repeat {
		return
	}
	if w.Metrics != nil {
		w.Metrics.Rejected.WithLabelValues(reason).Inc()
	}
	if w.Recorder != nil && w.Name != "" && w.File == "" {
		ref := &corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: w.Namespace, Name: w.Name}
		w.Recorder.Eventf(ref, corev1.EventTypeWarning, ReasonPoolsNotApplied, "pools not applied (%s), the pools in force stay: %s", reason, msg)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (w *PoolWatcher) logger() *zap.Logger {
	if w.Log == nil {
		return zap.NewNop()
	}
	return w.Log
}

func configKey(c *alloc.PoolConfig, cidrs []netip.Prefix) string {
	b, _ := json.Marshal(c)
	var s strings.Builder
	s.Write(b)
	for _, p := range cidrs {
		s.WriteString("|" + p.String())
	}
	return s.String()
}

// liveReadTimeout bounds the confirmation read, well inside the webhook
// timeouts (the chart's pinning webhook has 10 s).
const liveReadTimeout = 2 * time.Second

// LiveHolder is alloc.Options.ConfirmExternal: it reads the apiserver's
// IPAddress object for ip (networking.k8s.io/v1, named by the address),
// the record the apiserver keeps of every allocated Service address. No
// object means nobody holds the address, whatever a lagging cache says.
// It runs only when a Service asks for an address the caches show held, so
// it costs one GET per such request.
func LiveHolder(get func(ctx context.Context, name string) (*networkingv1.IPAddress, error)) func(ctx context.Context, ip netip.Addr) (string, bool, error) {
	return func(ctx context.Context, ip netip.Addr) (string, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, liveReadTimeout)
		defer cancel()
		a, err := get(ctx, ip.String())
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		if p := a.Spec.ParentRef; p != nil {
			if p.Resource == "services" && p.Group == "" {
				return p.Namespace + "/" + p.Name, true, nil
			}
			return p.Resource + "/" + p.Namespace + "/" + p.Name, true, nil
		}
		return "IPAddress/" + a.Name, true, nil
	}
}
