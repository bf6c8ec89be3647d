package serve

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestServiceCIDRFamiliesFollowTheCluster(t *testing.T) {
	cs := fake.NewClientset()
	c := newClusterCaches(cs, true, false)
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
