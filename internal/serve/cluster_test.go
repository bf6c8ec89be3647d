package serve

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/reconcile"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func TestServiceCIDRFamiliesFollowTheCluster(t *testing.T) {
	cs := fake.NewClientset()
	c, err := newClusterCaches(cs, true, false)
	if err != nil {
		t.Fatal(err)
	}
	fams := serviceCIDRFamilies{c}
	if _, err := fams.Families(); err == nil || !strings.Contains(err.Error(), "not synced") {
		t.Fatalf("before sync: %v", err)
	}
	if _, err := (namespaceGetter{c, cs}).GetNamespace(context.Background(), "x"); err == nil {
		t.Fatal("namespace read before sync must fail")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.factory.Start(ctx.Done())
	defer func() { cancel(); c.factory.Shutdown() }()
	c.factory.WaitForCacheSync(ctx.Done())
	if err := c.synced(); err != nil {
		t.Fatal(err)
	}
	if _, err := fams.Families(); err == nil || !strings.Contains(err.Error(), `ServiceCIDR "kubernetes"`) {
		t.Fatalf("without the default ServiceCIDR: %v", err)
	}

	sc := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"fd00:10:96::/108", "10.96.0.0/16"}}}
	if _, err := cs.NetworkingV1().ServiceCIDRs().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFamilies(t, fams, []corev1.IPFamily{"IPv6", "IPv4"})

	// Another ServiceCIDR does not change the families.
	extra := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.100.0.0/16"}}}
	if _, err := cs.NetworkingV1().ServiceCIDRs().Create(ctx, extra, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A change to the default one is picked up without restart.
	sc.Spec.CIDRs = []string{"10.96.0.0/16"}
	if _, err := cs.NetworkingV1().ServiceCIDRs().Update(ctx, sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFamilies(t, fams, []corev1.IPFamily{"IPv4"})

	// A namespace the cache has not seen yet is read from the apiserver:
	// stop the informers first so the cache cannot catch up.
	cancel()
	c.factory.Shutdown()
	ann := map[string]string{"dualstack-webhook.io/ip-family-policy": "RequireDualStack"}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Annotations: ann}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.nsLister.Get("fresh"); err == nil {
		t.Fatal("test setup: the stopped cache saw the namespace")
	}
	ns, err := (namespaceGetter{c, cs}).GetNamespace(context.Background(), "fresh")
	if err != nil || ns.Annotations["dualstack-webhook.io/ip-family-policy"] != "RequireDualStack" {
		t.Fatalf("read-through on a cache miss: %v %v", ns, err)
	}
	if _, err := (namespaceGetter{c, cs}).GetNamespace(context.Background(), "missing"); !apierrors.IsNotFound(err) {
		t.Fatalf("a namespace that does not exist: err = %v, want NotFound", err)
	}
}

func waitFamilies(t *testing.T, s serviceCIDRFamilies, want []corev1.IPFamily) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := s.Families()
		if err == nil && equalFamilies(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("families = %v (%v), want %v", got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSlimKeepsWhatTheWebhookReads: the informers' transform keeps of a
// Service, an IPAddress and a Namespace exactly what the allocator, the
// reconciler and admission read, drops the rest (managedFields, spec
// fields, status, annotations of Services), and passes tombstones through.
func TestSlimKeepsWhatTheWebhookReads(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u1", ResourceVersion: "7",
			Labels: map[string]string{"tier": "api"}, Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
			ManagedFields: mf},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.12", ClusterIPs: []string{"10.96.0.12", "fd00:10:96::12"},
			Ports: []corev1.ServicePort{{Port: 80}}, Selector: map[string]string{"app": "web"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}}},
	}
	got, err := slim(svc.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u1", ResourceVersion: "7", Labels: map[string]string{"tier": "api"}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.12", ClusterIPs: []string{"10.96.0.12", "fd00:10:96::12"}},
	}
	if s, ok := got.(*reconcile.SlimService); !ok || !equality.Semantic.DeepEqual(s.Service(true), want) {
		t.Errorf("Service slimmed to %+v, want %+v", got, want)
	}
	// The listers read it back, the reconciler's without labels.
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(got); err != nil {
		t.Fatal(err)
	}
	if s, err := reconcile.NewSlimServiceLister(idx, true).Services("shop").Get("web"); err != nil || !equality.Semantic.DeepEqual(s, want) {
		t.Errorf("lister Get = %+v, %v; want %+v", s, err, want)
	}
	want.Labels = nil
	if l, err := reconcile.NewSlimServiceLister(idx, false).List(labels.Everything()); err != nil || len(l) != 1 || !equality.Semantic.DeepEqual(l[0], want) {
		t.Errorf("lister without labels: List = %+v, %v; want %+v", l, err, want)
	}
	// What the allocator's holder map and the reconciler read still works.
	held := reconcile.NewServiceIPs()
	held.Update(nil, got)
	if k, ok := held.Holder(netip.MustParseAddr("fd00:10:96::12")); !ok || k != "shop/web" || held.Len() != 2 {
		t.Errorf("the slim Service holds fd00:10:96::12 for %q, %v (%d addresses)", k, ok, held.Len())
	}

	parent := &networkingv1.ParentReference{Resource: "services", Namespace: "shop", Name: "web"}
	ipa := &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "10.96.0.12", UID: "u2", ResourceVersion: "8", ManagedFields: mf,
		Labels: map[string]string{"ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
		Spec: networkingv1.IPAddressSpec{ParentRef: parent}}
	if got, _ := slim(ipa); got.(*cachedIPAddress).name != "10.96.0.12" || got.(*cachedIPAddress).rv != "8" || *got.(*cachedIPAddress).parent != *parent {
		t.Errorf("IPAddress slimmed to %+v", got)
	}
	idx = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if got, _ := slim(ipa); idx.Add(got) != nil {
		t.Fatal("the cache does not take a slim IPAddress")
	}
	if got, err := (ipAddressCache{idx}).Get("10.96.0.12"); err != nil || !equality.Semantic.DeepEqual(got, &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: "10.96.0.12", ResourceVersion: "8"}, Spec: networkingv1.IPAddressSpec{ParentRef: parent}}) {
		t.Errorf("the slim IPAddress reads back as %+v, %v", got, err)
	}
	if _, err := (ipAddressCache{idx}).Get("10.96.0.13"); !apierrors.IsNotFound(err) {
		t.Errorf("an absent IPAddress reads as %v, want NotFound", err)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", ManagedFields: mf,
		Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"dualstack-webhook.io/ip-family-policy": "PreferDualStack"}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	if got, _ := slim(ns); !equality.Semantic.DeepEqual(got, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
		Labels: ns.Labels, Annotations: ns.Annotations}}) {
		t.Errorf("Namespace slimmed to %+v", got)
	}

	sc := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", ManagedFields: mf},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}}
	if got, _ := slim(sc); got.(*networkingv1.ServiceCIDR).ManagedFields != nil || got.(*networkingv1.ServiceCIDR).Spec.CIDRs[0] != "10.96.0.0/16" {
		t.Errorf("ServiceCIDR slimmed to %+v", got)
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: svc}
	if got, _ := slim(tomb); got != tomb {
		t.Errorf("tombstone changed: %+v", got)
	}
}

// TestIPAddressCacheReadsByName: the IPAddress informer keeps slim objects
// under no index (cluster-scoped, read only by name: a namespace index would
// be one set of every key), and the lister still finds them by address.
func TestIPAddressCacheReadsByName(t *testing.T) {
	parent := &networkingv1.ParentReference{Resource: "services", Namespace: "shop", Name: "web"}
	cs := fake.NewClientset(&networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "10.96.0.12", UID: "u"},
		Spec: networkingv1.IPAddressSpec{ParentRef: parent}})
	c, err := newClusterCaches(cs, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if ix := c.ipaddrs.GetIndexer().GetIndexers(); len(ix) != 0 {
		t.Errorf("IPAddress informer indexes %v, want none", ix)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.factory.Start(ctx.Done())
	defer func() { cancel(); c.factory.Shutdown() }()
	c.factory.WaitForCacheSync(ctx.Done())
	got, err := c.ipaddrLister.Get("10.96.0.12")
	if err != nil || got.Spec.ParentRef == nil || *got.Spec.ParentRef != *parent || got.UID != "" {
		t.Fatalf("lister Get = %+v, %v; want the slim IPAddress", got, err)
	}
}

// notYet is a handler registration that has not seen the initial list.
type notYet struct {
	cache.ResourceEventHandlerRegistration
}

func (notYet) HasSynced() bool { return false }

// TestReadinessWaitsForTheServiceAddressMap: the map of Service addresses
// is filled by an event handler behind the Service cache; readiness (and
// the reconciler's start) wait for it, not only for the cache.
func TestReadinessWaitsForTheServiceAddressMap(t *testing.T) {
	cs := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.12", ClusterIPs: []string{"10.96.0.12"}}})
	c, err := newClusterCaches(cs, false, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.factory.Start(ctx.Done())
	defer func() { cancel(); c.factory.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), c.servicesSynced, c.namespaces.HasSynced, c.ipaddrs.HasSynced, c.cidrs.HasSynced) {
		t.Fatal("caches did not sync")
	}
	if err := c.synced(); err != nil {
		t.Fatalf("synced() = %v once everything synced", err)
	}
	if k, ok := c.serviceIPs.Holder(netip.MustParseAddr("10.96.0.12")); !ok || k != "shop/web" {
		t.Errorf("10.96.0.12 held by %q, %v once synced", k, ok)
	}
	real := c.serviceIPsFilled
	c.serviceIPsFilled = notYet{real}
	if err := c.synced(); err == nil {
		t.Error("synced() passes while the address map has not seen the initial list")
	}
	if c.servicesSynced() {
		t.Error("servicesSynced() passes while the address map has not seen the initial list")
	}
}
