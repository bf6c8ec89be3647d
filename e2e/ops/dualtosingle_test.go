package ops

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

// commentedPools is a pools.yaml as an operator keeps it: comments, keys in
// their own order, flow and block lists.
const commentedPools = `# Service address pools (owner: platform-network).
apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
# Services no rule selects land here.
defaultPool: general
pools:
  # Most workloads.
  - name: general
    strategy: lowest # dense
    addresses:
      ipv4:
        - 10.96.0.1-10.96.1.0 # static band of the default range
      ipv6:
        - "fd00:10:96::1-fd00:10:96::100"
    exclude:
      - 10.96.0.10 # kube-dns
  # The extra IPv6 range, going away.
  - name: extra6
    addresses:
      ipv6: ["fd00:20::1-fd00:20::10"]
  - name: dual # both families of ServiceCIDR dual
    addresses:
      ipv4: [10.97.0.1-10.97.0.10]
      ipv6: [fd00:30::1-fd00:30::10]
`

// TestDualToSingleRemovesFamily runs dual-to-single on a cluster with
// kube-controller-manager, extra ServiceCIDRs of the removed family (IPv6
// only, and dual-stack) and a commented pools document:
//   - the first run downgrades the Services and frees the webhook's
//     reservation of a dropped address, creates the IPv4 replacement of the
//     dual-stack ServiceCIDR, and leaves the pools and the deletions for later
//     because an IPv6-primary Service (re-created by hand only) still holds
//     an IPv6 address;
//   - once that Service is gone, the second run removes IPv6 from the pools
//     (comments and key order kept) and deletes both extra ServiceCIDRs,
//     which the service-cidr controller then lets go;
//   - the default ServiceCIDR keeps IPv6: the apiserver refuses any change
//     of its ranges, and the plan says so.
func TestDualToSingleRemovesFamily(t *testing.T) {
	c := newCluster(t, "d2s-cidrs", framework.DualStackCIDRs, true)
	cl := c.env.Client
	for name, cidrs := range map[string][]string{"extra6": {"fd00:20::/108"}, "dual": {"10.97.0.0/24", "fd00:30::/108"}} {
		if _, err := cl.NetworkingV1().ServiceCIDRs().Create(c.ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.waitFor("ServiceCIDR "+name+" Ready", func() (bool, string) {
			cond := readyCond(c.serviceCIDR(name))
			return cond != nil && cond.Status == metav1.ConditionTrue, "not Ready"
		})
	}
	if _, err := cl.CoreV1().ConfigMaps(webhookNS).Create(c.ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ops.DefaultPoolsConfigMap},
		Data:       map[string]string{alloc.ConfigMapKey: commentedPools},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := c.namespace("d2s", nil)
	c.service(ns, "on-dual", corev1.IPFamilyPolicyRequireDualStack, fv46, "10.97.0.5", "fd00:30::5")
	c.service(ns, "on-extra6", corev1.IPFamilyPolicyRequireDualStack, fv46, "10.96.0.50", "fd00:20::7")
	c.service(ns, "v6first", corev1.IPFamilyPolicyPreferDualStack, fv64, "fd00:10:96::99", "10.96.0.99")
	// The webhook's reservation of on-dual's IPv6 address, as it would hold
	// it: the downgrade must free it, or it would pin IPv6 in the pools.
	st, err := configmap.New(cl, configmap.Options{Namespace: webhookNS})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(c.ctx)
	if err := st.Start(sctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(c.ctx, alloc.Reservation{IP: netip.MustParseAddr("fd00:30::5"), Pool: "dual", State: alloc.StateBound,
		Owner: alloc.Owner{Namespace: ns, Name: "on-dual"}, Created: time.Now(), Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	stop()
	st.Shutdown()

	// The default ServiceCIDR's ranges cannot be changed through the API:
	// that is why the tool leaves it to the operator.
	def := c.serviceCIDR(ops.DefaultServiceCIDR)
	def.Spec.CIDRs = def.Spec.CIDRs[:1]
	if _, err := cl.NetworkingV1().ServiceCIDRs().Update(c.ctx, def, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("shrinking the default ServiceCIDR: %v, want Invalid (immutable)", err)
	}

	p := c.plan("dual-to-single", "--family", "IPv6")
	want := []ops.Action{ops.ActServices, ops.ActEditPools, ops.ActCreateServiceCIDR, ops.ActWaitReady, ops.ActDeleteServiceCIDR, ops.ActDeleteServiceCIDR}
	var got []ops.Action
	for _, s := range p.Steps {
		got = append(got, s.Action)
	}
	if !slices.Equal(got, want) || p.Steps[2].ServiceCIDR.Name != "dual-ipv4" {
		t.Fatalf("plan steps %v, want %v: %+v", got, want, p.Steps)
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "ServiceCIDR kubernetes keeps fd00:10:96::/108") {
		t.Errorf("notes %v", p.Notes)
	}

	// First run: v6first (IPv6 primary, not touched) still holds an IPv6
	// address of the default range.
	out, _ := c.run(false, "apply", "dual-to-single", "--family", "IPv6", "--confirm")
	// The pool edit waits for v6first; the deletions wait for the pools
	// (deleting a range the pools still list would invalidate them).
	for _, s := range []string{"not yet: Service " + ns + "/v6first holds fd00:10:96::99", "not yet: pool extra6 still lists fd00:20::1-fd00:20::10", "not yet: pool dual still lists fd00:30::1-fd00:30::10"} {
		if strings.Count(out, s) != 1 {
			t.Errorf("first run: want %q once:\n%s", s, out)
		}
	}
	for _, name := range []string{"on-dual", "on-extra6"} {
		if s := c.get(ns, name); *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack || len(s.Spec.ClusterIPs) != 1 {
			t.Errorf("%s not downgraded: %v", name, s.Spec.ClusterIPs)
		}
	}
	if _, err := cl.CoreV1().ConfigMaps(webhookNS).Get(c.ctx, configmap.Name(netip.MustParseAddr("fd00:30::5")), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("reservation of the dropped address: %v", err)
	}
	if sc := c.serviceCIDR("dual-ipv4"); !slices.Equal(sc.Spec.CIDRs, []string{"10.97.0.0/24"}) {
		t.Errorf("replacement %v", sc.Spec.CIDRs)
	}
	for _, name := range []string{"extra6", "dual"} {
		if sc := c.serviceCIDR(name); sc.DeletionTimestamp != nil {
			t.Errorf("%s deleted while an IPv6 address is in use", name)
		}
	}
	if cm := c.poolsDoc(); cm != commentedPools {
		t.Errorf("pools edited while IPv6 is in use:\n%s", cm)
	}

	// The operator re-creates v6first as IPv4 (here: deletes it); the next
	// run finishes.
	if err := cl.CoreV1().Services(ns).Delete(c.ctx, "v6first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _ = c.run(false, "apply", "dual-to-single", "--family", "IPv6", "--confirm")
	if strings.Contains(out, "not yet") || strings.Count(out, "deletion requested") != 2 || !strings.Contains(out, "pools ConfigMap updated") {
		t.Errorf("second run:\n%s", out)
	}
	wantDoc := `# Service address pools (owner: platform-network).
apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
# Services no rule selects land here.
defaultPool: general
pools:
  # Most workloads.
  - name: general
    strategy: lowest # dense
    addresses:
      ipv4:
        - 10.96.0.1-10.96.1.0 # static band of the default range
    exclude:
      - 10.96.0.10 # kube-dns
  - name: dual # both families of ServiceCIDR dual
    addresses:
      ipv4: [10.97.0.1-10.97.0.10]
`
	if doc := c.poolsDoc(); doc != wantDoc {
		t.Errorf("pools.yaml after the run:\n%s\nwant:\n%s", doc, wantDoc)
	}
	for _, name := range []string{"extra6", "dual"} {
		c.waitFor("ServiceCIDR "+name+" to be deleted", func() (bool, string) {
			sc, err := cl.NetworkingV1().ServiceCIDRs().Get(c.ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, ""
			}
			if err != nil {
				return false, err.Error()
			}
			return false, "finalizers " + strings.Join(sc.Finalizers, ",")
		})
	}
	// on-dual keeps its IPv4 address, now in the replacement.
	if s := c.get(ns, "on-dual"); s.Spec.ClusterIP != "10.97.0.5" {
		t.Errorf("on-dual: %s", s.Spec.ClusterIP)
	}
	if p := c.plan("dual-to-single", "--family", "IPv6"); len(p.Steps)+len(p.Services) != 0 {
		t.Errorf("plan after the run: %+v", p)
	}
	if sc := c.serviceCIDR(ops.DefaultServiceCIDR); len(sc.Spec.CIDRs) != 2 || sc.DeletionTimestamp != nil {
		t.Errorf("default ServiceCIDR touched: %v", sc.Spec.CIDRs)
	}
}

// poolsDoc is the pools ConfigMap's document text.
func (c *cluster) poolsDoc() string {
	c.t.Helper()
	cm, err := c.env.Client.CoreV1().ConfigMaps(webhookNS).Get(c.ctx, ops.DefaultPoolsConfigMap, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return cm.Data[alloc.ConfigMapKey]
}
