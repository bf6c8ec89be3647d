package serve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/reconcile"
	"github.com/dualstack-webhook/dualstack-webhook/webhook"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	corev1informers "k8s.io/client-go/informers/core/v1"
	networkingv1informers "k8s.io/client-go/informers/networking/v1"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	networkingv1listers "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// defaultServiceCIDR is the ServiceCIDR the apiserver creates from its
// --service-cluster-ip-range (KEP-1880): its spec.cidrs order is the
// cluster's family order, primary first. Extra ServiceCIDRs add ranges but
// never change the families.
const defaultServiceCIDR = "kubernetes"

// restConfig loads a kubeconfig the way kubectl does (explicit path, then
// $KUBECONFIG, then ~/.kube/config) and falls back to the in-cluster
// service account.
func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	// client-go's default of 5 QPS / burst 10 would throttle the state
	// store long before the apiserver does (CAPI in-cluster IPAM hands out duplicates without it).
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "dualstack-webhook"
	// The apiserver is a cluster-network hop away: gzip would only spend
	// CPU on both ends, on every watch event of every replica (it was 7% of
	// a replica's CPU under a burst of Service creates).
	cfg.DisableCompression = true
	return cfg, nil
}

// clusterCaches are the informers the webhook reads on its hot path.
type clusterCaches struct {
	factory    informers.SharedInformerFactory
	namespaces cache.SharedIndexInformer
	nsLister   corev1listers.NamespaceLister
	cidrs      cache.SharedIndexInformer // nil when --service-cidrs is given and pinning is off
	cidrLister networkingv1listers.ServiceCIDRLister

	// Pinning only: live Services (and which holds which address) and
	// the apiserver's IPAddress objects, so that the allocator never hands
	// out an address something already holds, and the reconciler's view.
	services      cache.SharedIndexInformer
	serviceLister corev1listers.ServiceLister
	serviceIPs    *reconcile.ServiceIPs
	// serviceIPsFilled: the handler that fills serviceIPs has seen the
	// initial list (it runs behind the informer's cache).
	serviceIPsFilled cache.ResourceEventHandlerRegistration
	ipaddrs          cache.SharedIndexInformer
	ipaddrLister     reconcile.IPAddressGetter
}

func newClusterCaches(cs kubernetes.Interface, watchServiceCIDRs, pinning bool) (*clusterCaches, error) {
	// Resync 0: the reconciler resyncs on its own timer, from the caches.
	// The transform keeps of each object only what the webhook reads.
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(slim))
	c := &clusterCaches{factory: f}
	nsi := f.Core().V1().Namespaces()
	c.namespaces, c.nsLister = nsi.Informer(), nsi.Lister()
	if pinning {
		// Without the factory's namespace index either: Services are
		// read by key and listed whole, never by namespace.
		c.services = f.InformerFor(&corev1.Service{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			return corev1informers.NewFilteredServiceInformer(cs, metav1.NamespaceAll, resync, cache.Indexers{}, nil)
		})
		c.serviceLister = reconcile.NewSlimServiceLister(c.services.GetIndexer(), true)
		c.serviceIPs = reconcile.NewServiceIPs()
		reg, err := c.services.AddEventHandler(c.serviceIPs.Handler())
		if err != nil {
			return nil, err
		}
		c.serviceIPsFilled = reg
		// Without the factory's namespace index: IPAddresses are
		// cluster-scoped, so it would be one set of every key, and they
		// are only ever read by name.
		c.ipaddrs = f.InformerFor(&networkingv1.IPAddress{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			return networkingv1informers.NewFilteredIPAddressInformer(cs, resync, cache.Indexers{}, nil)
		})
		c.ipaddrLister = ipAddressCache{c.ipaddrs.GetIndexer()}
	}
	if watchServiceCIDRs || pinning {
		si := f.Networking().V1().ServiceCIDRs()
		c.cidrs, c.cidrLister = si.Informer(), si.Lister()
	}
	return c, nil
}

// slim is the informers' transform: every replica caches every Service and
// IPAddress of the cluster, so each keeps only the fields the webhook
// reads. A Service becomes a reconcile.SlimService: its identity (name,
// namespace, UID, resourceVersion), labels (pool serviceSelectors) and type
// and clusterIPs (who holds which address); an IPAddress becomes a
// cachedIPAddress, its name (the address) and parentRef; a Namespace keeps
// its labels and annotations (policy, skip label, namespaceSelectors).
// managedFields go everywhere. Anything else (tombstones) passes as is.
// Strings every object of a kind repeats (a Service's type, a parentRef's
// resource) become the program's constants instead of one copy each from
// the decoder.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		o.Spec.Type = serviceType(o.Spec.Type)
		return reconcile.NewSlimService(o), nil
	case *networkingv1.IPAddress:
		// The decoder's object is ours to change (like managedFields
		// below).
		if p := o.Spec.ParentRef; p != nil && p.Resource == "services" {
			p.Resource = "services"
		}
		return &cachedIPAddress{name: o.Name, rv: o.ResourceVersion, parent: o.Spec.ParentRef}, nil
	case *corev1.Namespace:
		return &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion,
				Labels: o.Labels, Annotations: o.Annotations, DeletionTimestamp: o.DeletionTimestamp},
		}, nil
	case metav1.Object:
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// serviceType is t, as the program's constant when it is one.
func serviceType(t corev1.ServiceType) corev1.ServiceType {
	for _, c := range []corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName} {
		if t == c {
			return c
		}
	}
	return t
}

// cachedIPAddress is what the IPAddress informer keeps of an IPAddress:
// its name (the address), resourceVersion and parentRef. Every replica
// caches one per allocated Service address (25,000 at 20,000 Services),
// and a networkingv1.IPAddress is a 288-byte object of which these are 40.
type cachedIPAddress struct {
	name, rv string
	parent   *networkingv1.ParentReference // shared, never modified
}

// GetObjectKind, DeepCopyObject: a cachedIPAddress is a runtime.Object;
// nothing mutates one.
func (c *cachedIPAddress) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (c *cachedIPAddress) DeepCopyObject() runtime.Object   { x := *c; return &x }

// GetObjectMeta makes a cachedIPAddress a metav1.ObjectMetaAccessor, which
// is how the informer reads its key and resourceVersion.
func (c *cachedIPAddress) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: c.name, ResourceVersion: c.rv}
}

// ipAddressCache reads the IPAddress informer's cache by name, as
// IPAddress objects with only name, resourceVersion and parentRef.
type ipAddressCache struct{ idx cache.Indexer }

var _ reconcile.IPAddressGetter = ipAddressCache{}

func (c ipAddressCache) Get(name string) (*networkingv1.IPAddress, error) {
	obj, ok, err := c.idx.GetByKey(name)
	if err != nil {
		return nil, err
	}
	a, _ := obj.(*cachedIPAddress)
	if !ok || a == nil {
		return nil, apierrors.NewNotFound(networkingv1.Resource("ipaddresses"), name)
	}
	out := &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: a.name, ResourceVersion: a.rv}}
	if a.parent != nil {
		p := *a.parent
		out.Spec.ParentRef = &p
	}
	return out, nil
}

// synced is the readiness check of the caches.
func (c *clusterCaches) synced() error {
	if !c.namespaces.HasSynced() {
		return errors.New("namespace cache not synced")
	}
	if c.cidrs != nil && !c.cidrs.HasSynced() {
		return errors.New("ServiceCIDR cache not synced")
	}
	if c.services != nil && !c.servicesSynced() {
		return errors.New("Service cache not synced")
	}
	if c.ipaddrs != nil && !c.ipaddrs.HasSynced() {
		return errors.New("IPAddress cache not synced")
	}
	return nil
}

// servicesSynced: the Service cache and the address map kept from it hold
// the initial list.
func (c *clusterCaches) servicesSynced() bool {
	return c.services.HasSynced() && c.serviceIPsFilled.HasSynced()
}

// namespaceGetter reads Namespaces from the informer cache and, on a miss,
// from the apiserver. The miss is the normal case for a namespace created a
// moment before its Services (one `kubectl apply` of both): the watch event
// may not have arrived yet, and treating the namespace as unannotated would
// silently ignore its default policy or skip label. Before the first list
// completes every read fails (transient), so a skip label is never missed
// because the cache was still empty.
type namespaceGetter struct {
	c      *clusterCaches
	client kubernetes.Interface
}

var _ webhook.NamespaceGetter = namespaceGetter{}

func (g namespaceGetter) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if !g.c.namespaces.HasSynced() {
		return nil, errors.New("namespace cache not synced yet")
	}
	ns, err := g.c.nsLister.Get(name)
	if err == nil || !apierrors.IsNotFound(err) || g.client == nil {
		return ns, err
	}
	ctx, cancel := context.WithTimeout(ctx, liveReadTimeout)
	defer cancel()
	return g.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

// liveReadTimeout bounds the read-through on a cache miss, well inside the
// apiserver's default webhook timeout (10 s) and the chart's shorter ones.
const liveReadTimeout = 2 * time.Second

// serviceCIDRFamilies derives the families from the default ServiceCIDR in
// the informer cache on every call, so a change is picked up at once.
type serviceCIDRFamilies struct{ c *clusterCaches }

var _ webhook.FamilySource = serviceCIDRFamilies{}

func (s serviceCIDRFamilies) Families() ([]corev1.IPFamily, error) {
	if !s.c.cidrs.HasSynced() {
		return nil, errors.New("ServiceCIDR cache not synced yet")
	}
	sc, err := s.c.cidrLister.Get(defaultServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("reading ServiceCIDR %q (networking.k8s.io/v1, Kubernetes ≥ 1.33; else pass --service-cidrs): %w", defaultServiceCIDR, err)
	}
	var cidrs []string
	cidrs = append(cidrs, sc.Spec.CIDRs...)
	fams := make([]corev1.IPFamily, 0, len(cidrs))
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("ServiceCIDR %q: %w", defaultServiceCIDR, err)
		}
		fams = append(fams, familyOf(p.Addr()))
	}
	if len(fams) == 0 || len(fams) > 2 || (len(fams) == 2 && fams[0] == fams[1]) {
		return nil, fmt.Errorf("ServiceCIDR %q has unusable cidrs %v", defaultServiceCIDR, cidrs)
	}
	return fams, nil
}
