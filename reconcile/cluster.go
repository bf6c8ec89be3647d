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
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corev1listers "k8s.io/client-go/listers/core/v1"
	networkingv1listers "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// IPIndex is the Services informer index by clusterIP (canonical text).
const IPIndex = "clusterIP"

// IndexByClusterIP indexes a Service by every address it holds. Unlike the
// reconciler's view, default/kubernetes is included: its address must never
// be handed out.
func IndexByClusterIP(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok || s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, v := range ips {
		if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, a.String())
		}
	}
	return out, nil
}

// Holder is alloc.Options.External: an address is held when a live Service
// (services must carry IPIndex) or an IPAddress object (networking.k8s.io/v1,
// the apiserver's own allocation record, named by the address) has it. The
// IPAddress check also covers Services the webhook never sees (excluded
// namespaces) whose watch event has not arrived yet. Either source may be
// nil.
func Holder(services cache.Indexer, ipaddrs networkingv1listers.IPAddressLister) alloc.HolderFunc {
	return func(ip netip.Addr) (string, bool) {
		key := ip.String()
		if services != nil {
			if objs, err := services.ByIndex(IPIndex, key); err == nil && len(objs) > 0 {
				if s, ok := objs[0].(*corev1.Service); ok {
					return s.Namespace + "/" + s.Name, true
				}
			}
		}
		if ipaddrs != nil {
			if a, err := ipaddrs.Get(key); err == nil && a != nil {
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

	mu   sync.Mutex
	last string
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
	cidrs, err := w.CIDRs()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case w.File != "":
		c, err := alloc.LoadConfigFile(w.File)
		return c, cidrs, err
	case w.ConfigMaps != nil && w.Name != "":
		cm, err := w.ConfigMaps.ConfigMaps(w.Namespace).Get(w.Name)
		if apierrors.IsNotFound(err) {
			return &alloc.PoolConfig{APIVersion: alloc.ConfigAPIVersion, Kind: alloc.ConfigKind}, cidrs, nil
		}
		if err != nil {
			return nil, nil, err
		}
		c, err := alloc.ConfigFromConfigMap(cm)
		return c, cidrs, err
	}
	return &alloc.PoolConfig{APIVersion: alloc.ConfigAPIVersion, Kind: alloc.ConfigKind}, cidrs, nil
}

// Initial compiles the pools to start with. A document that does not
// compile is logged and replaced by the static band, so that a bad edit
// (the pools guard is fail-open) never keeps the webhook from starting;
// addresses already reserved stay taken whatever the pools say.
func (w *PoolWatcher) Initial() (*alloc.Pools, error) {
	c, cidrs, err := w.Load()
	if err != nil && cidrs == nil {
		return nil, err
	}
	if err == nil {
		p, cerr := alloc.Compile(c, cidrs)
		if cerr == nil {
			w.remember(c, cidrs)
			return p, nil
		}
		err = cerr
	}
	w.logger().Error("pools document unusable at start; pinning from the static band until it is fixed", zap.Error(err))
	return alloc.Compile(nil, cidrs)
}

// Apply re-reads the document and the CIDRs and applies them if they
// changed. A rejected change (invalid, or orphaning addresses in use)
// keeps the pools in force and is returned.
func (w *PoolWatcher) Apply(ctx context.Context, a PoolApplier) error {
	c, cidrs, err := w.Load()
	if err != nil {
		return err
	}
	key := configKey(c, cidrs)
	w.mu.Lock()
	same := key == w.last
	w.mu.Unlock()
	if same {
		return nil
	}
	if err := a.ApplyConfig(ctx, c, cidrs); err != nil {
		return err
	}
	w.remember(c, cidrs)
	return nil
}

func (w *PoolWatcher) remember(c *alloc.PoolConfig, cidrs []netip.Prefix) {
	w.mu.Lock()
	w.last = configKey(c, cidrs)
	w.mu.Unlock()
}

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
