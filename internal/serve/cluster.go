package serve

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/dualstack-webhook/dualstack-webhook/webhook"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
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
	// store long before the apiserver does (lessons-from-peers.md).
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "dualstack-webhook"
	return cfg, nil
}

// clusterCaches are the informers the webhook reads on its hot path.
type clusterCaches struct {
	factory    informers.SharedInformerFactory
	namespaces cache.SharedIndexInformer
	nsLister   corev1listers.NamespaceLister
	cidrs      cache.SharedIndexInformer // nil when --service-cidrs is given
	cidrLister networkingv1listers.ServiceCIDRLister
}

func newClusterCaches(cs kubernetes.Interface, watchServiceCIDRs bool) *clusterCaches {
	// Resync 0: the handlers only read the caches, nothing to reconcile.
	f := informers.NewSharedInformerFactory(cs, 0)
	c := &clusterCaches{factory: f}
	nsi := f.Core().V1().Namespaces()
	c.namespaces, c.nsLister = nsi.Informer(), nsi.Lister()
	if watchServiceCIDRs {
		si := f.Networking().V1().ServiceCIDRs()
		c.cidrs, c.cidrLister = si.Informer(), si.Lister()
	}
	return c
}

// synced is the readiness check of the caches.
func (c *clusterCaches) synced() error {
	if !c.namespaces.HasSynced() {
		return errors.New("namespace cache not synced")
	}
	if c.cidrs != nil && !c.cidrs.HasSynced() {
		return errors.New("ServiceCIDR cache not synced")
	}
	return nil
}

// syncedNamespaces refuses reads before the first list completed, so a skip
// label is never missed because the cache was still empty.
type syncedNamespaces struct{ c *clusterCaches }

var _ webhook.NamespaceLister = syncedNamespaces{}

func (s syncedNamespaces) Get(name string) (*corev1.Namespace, error) {
	if !s.c.namespaces.HasSynced() {
		return nil, errors.New("namespace cache not synced yet")
	}
	return s.c.nsLister.Get(name)
}

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
