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
	"k8s.io/client-go/informers"
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
	ipaddrLister     networkingv1listers.IPAddressLister
}

func newClusterCaches(cs kubernetes.Interface, watchServiceCIDRs, pinning bool) (*clusterCaches, error) {
	// Resync 0: the reconciler resyncs on its own timer, from the caches.
	// The transform keeps of each object only what the webhook reads.
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(slim))
	c := &clusterCaches{factory: f}
	nsi := f.Core().V1().Namespaces()
	c.namespaces, c.nsLister = nsi.Informer(), nsi.Lister()
	if pinning {
		si := f.Core().V1().Services()
		c.services, c.serviceLister = si.Informer(), si.Lister()
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
		c.ipaddrLister = networkingv1listers.NewIPAddressLister(c.ipaddrs.GetIndexer())
	}
	if watchServiceCIDRs || pinning {
		si := f.Networking().V1().ServiceCIDRs()
		c.cidrs, c.cidrLister = si.Informer(), si.Lister()
	}
	return c, nil
}

// slim is the informers' transform: every replica caches every Service and
// IPAddress of the cluster, so each keeps only the fields the webhook
// reads. A Service keeps its identity (name, namespace, UID,
// resourceVersion), labels (pool serviceSelectors) and type and clusterIPs
// (who holds which address); an IPAddress its name (the address) and
// parentRef; a Namespace its
// labels and annotations (policy, skip label, namespaceSelectors).
// managedFields go everywhere. Anything else (tombstones) passes as is.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion,
				Labels: o.Labels, DeletionTimestamp: o.DeletionTimestamp},
			Spec: corev1.ServiceSpec{Type: o.Spec.Type, ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs},
		}, nil
	case *networkingv1.IPAddress:
		return &networkingv1.IPAddress{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, ResourceVersion: o.ResourceVersion},
			Spec:       networkingv1.IPAddressSpec{ParentRef: o.Spec.ParentRef},
		}, nil
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
