package ops

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

var (
	fv4  = []corev1.IPFamily{corev1.IPv4Protocol}
	fv6  = []corev1.IPFamily{corev1.IPv6Protocol}
	fv46 = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	fv64 = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
)

func (c *cluster) serviceCIDR(name string) *networkingv1.ServiceCIDR {
	c.t.Helper()
	sc, err := c.env.Client.NetworkingV1().ServiceCIDRs().Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return sc
}

func readyCond(sc *networkingv1.ServiceCIDR) *metav1.Condition {
	for i := range sc.Status.Conditions {
		if sc.Status.Conditions[i].Type == networkingv1.ServiceCIDRConditionReady {
			return &sc.Status.Conditions[i]
		}
	}
	return nil
}

// TestExtend: a ServiceCIDR of the primary family and a pool over its static
// band; the range is usable at once (a Service asks for an address in it);
// a second apply changes nothing.
func TestExtend(t *testing.T) {
	c := newCluster(t, "extend", framework.V4CIDRs, true) // 10.0.0.0/16
	p := c.plan("extend", "--cidr", "10.1.0.0/24")
	if len(p.Steps) != 3 || p.Steps[0].ServiceCIDR.Name != "extend-10-1-0-0-24" {
		t.Fatalf("plan %+v", p)
	}
	// Dry run: nothing written.
	out, _ := c.run(false, "apply", "extend", "--cidr", "10.1.0.0/24")
	if !strings.Contains(out, "(dry run) would create ServiceCIDR extend-10-1-0-0-24") {
		t.Errorf("dry run output:\n%s", out)
	}
	if _, err := c.env.Client.NetworkingV1().ServiceCIDRs().Get(c.ctx, "extend-10-1-0-0-24", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created the ServiceCIDR: %v", err)
	}
	c.run(false, "apply", "extend", "--cidr", "10.1.0.0/24", "--confirm")
	if cond := readyCond(c.serviceCIDR("extend-10-1-0-0-24")); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Errorf("new ServiceCIDR not Ready: %+v", cond)
	}
	pc := c.pools()
	band, ext := poolNamed(pc, alloc.StaticBandPool), poolNamed(pc, "extend-10-1-0-0-24")
	if band == nil || ext == nil || pc.DefaultPool != alloc.StaticBandPool ||
		!slices.Equal(band.Addresses.IPv4, []string{"10.0.0.1-10.0.1.0"}) || !slices.Equal(ext.Addresses.IPv4, []string{"10.1.0.1-10.1.0.16"}) {
		t.Errorf("pools %+v", pc)
	}
	// The new range allocates: a Service asks for an address in it.
	ns := c.namespace("extend", nil)
	s := c.service(ns, "in-new-range", corev1.IPFamilyPolicySingleStack, fv4, "10.1.0.5")
	if s.Spec.ClusterIP != "10.1.0.5" {
		t.Errorf("clusterIP %s", s.Spec.ClusterIP)
	}
	// -o json keeps stdout a document (progress goes to stderr).
	js, progress := c.run(false, "apply", "extend", "--cidr", "10.1.0.0/24", "-o", "json")
	var doc struct {
		Plan ops.Plan `json:"plan"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil || doc.Plan.Scenario != ops.Extend || !strings.Contains(progress, "dry run") {
		t.Errorf("apply -o json: %v\nstdout:\n%s\nstderr:\n%s", err, js, progress)
	}
	// Idempotent: the second run finds everything done.
	if p := c.plan("extend", "--cidr", "10.1.0.0/24"); len(p.Steps) != 0 {
		t.Errorf("plan after apply: %+v", p.Steps)
	}
	rv := c.poolsRV()
	c.run(false, "apply", "extend", "--cidr", "10.1.0.0/24", "--confirm")
	if c.poolsRV() != rv {
		t.Error("second apply rewrote the pools ConfigMap")
	}
	// Validation: overlapping ranges are refused before anything is written.
	if _, errOut := c.run(true, "plan", "extend", "--cidr", "10.0.128.0/24"); !strings.Contains(errOut, "overlaps 10.0.0.0/16 of ServiceCIDR \"kubernetes\"") {
		t.Errorf("overlap: %s", errOut)
	}
	// status sees the new ServiceCIDR and pool.
	var st ops.Status
	out, _ = c.run(false, "status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.ServiceCIDRs) != 2 || len(st.Pools) != 2 {
		t.Errorf("status after extend: %+v", st)
	}

	// The pools ConfigMap deleted, the replicas' record of the last
	// document applied left: plan and apply both edit the record's
	// document (what the replicas pin from), not an empty one.
	cms := c.env.Client.CoreV1().ConfigMaps(webhookNS)
	applied, err := cms.Get(c.ctx, ops.DefaultPoolsConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(c.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: alloc.AppliedConfigMapName(ops.DefaultPoolsConfigMap)},
		Data: applied.Data}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(c.ctx, ops.DefaultPoolsConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.run(false, "apply", "extend", "--cidr", "10.2.0.0/24", "--confirm")
	pc = c.pools()
	var names []string
	for _, p := range pc.Pools {
		names = append(names, p.Name)
	}
	if len(pc.Pools) != 3 || poolNamed(pc, alloc.StaticBandPool) == nil || poolNamed(pc, "extend-10-1-0-0-24") == nil || poolNamed(pc, "extend-10-2-0-0-24") == nil {
		t.Errorf("apply over a deleted pools ConfigMap wrote pools %v, want the record's two and the new one", names)
	}
}

func (c *cluster) poolsRV() string {
	c.t.Helper()
	cm, err := c.env.Client.CoreV1().ConfigMaps(webhookNS).Get(c.ctx, ops.DefaultPoolsConfigMap, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return cm.ResourceVersion
}

// TestSingleToDualNeedsTheAPIServer: on an IPv4-only kube-apiserver, apply
// adds the IPv6 ServiceCIDR and pool, then refuses to touch Services: only
// --service-cluster-ip-range makes the apiserver allocate IPv6, whatever
// ServiceCIDRs exist (the upstream task's "update kube-apiserver").
func TestSingleToDualNeedsTheAPIServer(t *testing.T) {
	c := newCluster(t, "s2d-v4", framework.V4CIDRs, true)
	ns := c.namespace("s2d", map[string]string{"team": "a"})
	c.service(ns, "web", corev1.IPFamilyPolicySingleStack, fv4)
	out, errOut := c.run(true, "apply", "single-to-dual", "--cidr", "2000::/108", "--namespace-selector", "team=a", "--confirm")
	if !strings.Contains(errOut, "add the IPv6 range to its --service-cluster-ip-range first") {
		t.Errorf("stderr: %s", errOut)
	}
	if !strings.Contains(out, "created") {
		t.Errorf("stdout: %s", out)
	}
	if sc := c.serviceCIDR("secondary-2000-108"); !slices.Equal(sc.Spec.CIDRs, []string{"2000::/108"}) {
		t.Errorf("ServiceCIDR %v", sc.Spec.CIDRs)
	}
	if b := poolNamed(c.pools(), alloc.StaticBandPool); b == nil || !slices.Equal(b.Addresses.IPv6, []string{"2000::1-2000::100"}) {
		t.Errorf("pool %+v", b)
	}
	if s := c.get(ns, "web"); *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
		t.Errorf("Service touched: %v", *s.Spec.IPFamilyPolicy)
	}
}

// TestSingleToDual: the apiserver already serves both families (its flags
// were changed; every existing Service is still single-stack): apply adds the
// IPv6 addresses to the pool Services get and upgrades the chosen Services
// one at a time; the others stay single-stack.
func TestSingleToDual(t *testing.T) {
	for _, tc := range []struct{ name, cidrs, secondary, secondaryPrefix string }{
		{"v4 primary", framework.V4V6CIDRs, "2000::/108", "2000::/108"},
		{"v6 primary", framework.V6V4CIDRs, "10.0.0.0/16", "10.0.0.0/16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, "s2d", tc.cidrs, true)
			primary := fv4
			if strings.Contains(tc.cidrs[:6], ":") {
				primary = fv6
			}
			chosenNS := c.namespace("s2d-chosen", map[string]string{"team": "a"})
			otherNS := c.namespace("s2d-other", map[string]string{"team": "b"})
			c.service(chosenNS, "web", corev1.IPFamilyPolicySingleStack, primary)
			c.service(chosenNS, "api", corev1.IPFamilyPolicySingleStack, primary)
			c.service(otherNS, "db", corev1.IPFamilyPolicySingleStack, primary)
			p := c.plan("single-to-dual", "--cidr", tc.secondary, "--namespace-selector", "team=a")
			if len(p.Services) != 2 || p.Steps[0].Action == ops.ActCreateServiceCIDR {
				t.Fatalf("plan %+v", p)
			}
			out, _ := c.run(false, "apply", "single-to-dual", "--cidr", tc.secondary, "--namespace-selector", "team=a", "--confirm")
			for _, s := range []string{"[service 1/2] " + chosenNS + "/api: done", "[service 2/2] " + chosenNS + "/web: done"} {
				if !strings.Contains(out, s) {
					t.Errorf("progress lacks %q", s)
				}
			}
			for _, name := range []string{"web", "api"} {
				s := c.get(chosenNS, name)
				if *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack || len(s.Spec.ClusterIPs) != 2 || !inPrefix(tc.secondaryPrefix, s.Spec.ClusterIPs[1]) {
					t.Errorf("%s: %v %v", name, *s.Spec.IPFamilyPolicy, s.Spec.ClusterIPs)
				}
			}
			if s := c.get(otherNS, "db"); len(s.Spec.ClusterIPs) != 1 {
				t.Errorf("unchosen Service upgraded: %v", s.Spec.ClusterIPs)
			}
			// Re-run: nothing left.
			if p := c.plan("single-to-dual", "--cidr", tc.secondary, "--namespace-selector", "team=a"); len(p.Steps)+len(p.Services) != 0 {
				t.Errorf("plan after apply: %+v", p)
			}
		})
	}
}

// TestDualToSingle: Services using IPv6 are downgraded to SingleStack IPv4
// keeping their primary address; an IPv6-primary Service is reported and
// left alone; a second run has nothing to do.
func TestDualToSingle(t *testing.T) {
	c := newCluster(t, "d2s", framework.DualStackCIDRs, false)
	ns := c.namespace("d2s", nil)
	req := c.service(ns, "require", corev1.IPFamilyPolicyRequireDualStack, fv46)
	pref := c.service(ns, "prefer", corev1.IPFamilyPolicyPreferDualStack, nil)
	c.service(ns, "v6first", corev1.IPFamilyPolicyPreferDualStack, fv64)
	c.service(ns, "v4only", corev1.IPFamilyPolicySingleStack, fv4)
	c.service(ns, "headless", corev1.IPFamilyPolicyRequireDualStack, fv46, "None")

	out, _ := c.run(false, "plan", "dual-to-single", "--family", "IPv6")
	if !strings.Contains(out, ns+"/v6first") || !strings.Contains(out, "recreate-manually") {
		t.Errorf("plan table:\n%s", out)
	}
	out, _ = c.run(false, "apply", "dual-to-single", "--family", "IPv6", "--confirm")
	if !strings.Contains(out, ns+"/v6first: not touched") {
		t.Errorf("apply output:\n%s", out)
	}
	for _, want := range []struct {
		name string
		ip   string
	}{{"require", req.Spec.ClusterIPs[0]}, {"prefer", pref.Spec.ClusterIPs[0]}, {"headless", "None"}} {
		s := c.get(ns, want.name)
		if *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack || !slices.Equal(s.Spec.IPFamilies, fv4) || !slices.Equal(s.Spec.ClusterIPs, []string{want.ip}) {
			t.Errorf("%s: %v %v %v", want.name, *s.Spec.IPFamilyPolicy, s.Spec.IPFamilies, s.Spec.ClusterIPs)
		}
	}
	if s := c.get(ns, "v6first"); len(s.Spec.ClusterIPs) != 2 {
		t.Errorf("v6first touched: %v", s.Spec.ClusterIPs)
	}
	// Second run: only the manual one remains, nothing is patched.
	p := c.plan("dual-to-single", "--family", "IPv6")
	for _, s := range p.Services {
		if s.Change != ops.RecreateManually {
			t.Errorf("left after apply: %+v", s)
		}
	}
}

// TestReplacePrimary replaces ranges twice on one cluster with
// kube-controller-manager:
//  1. an extra ServiceCIDR (added by extend) is replaced: its Services move at
//     the same offsets, and once its last address is gone the service-cidr
//     controller removes the finalizer and the object disappears;
//  2. the default ServiceCIDR's IPv4 range is replaced: it stays Terminating
//     (default/kubernetes keeps 10.96.0.1, left to the apiserver), Services
//     move at the same offsets with everything else kept, one whose offset
//     does not exist in the smaller new range is reported, and a Service an
//     interrupted run had deleted is re-created from the journal.
func TestReplacePrimary(t *testing.T) {
	c := newCluster(t, "replace", framework.DualStackCIDRs, true)
	cl := c.env.Client
	ns := c.namespace("replace", nil)

	// 1. extra range.
	c.run(false, "apply", "extend", "--cidr", "10.97.0.0/24", "--cidr-name", "extra", "--confirm")
	c.service(ns, "on-extra", corev1.IPFamilyPolicySingleStack, fv4, "10.97.0.33")
	// "stuck" carries a finalizer nobody removes: its deletion hangs, the
	// first run gives up waiting (an interruption between delete and
	// create), the journal keeps the Service, and the next run re-creates it.
	stuck := c.service(ns, "stuck", corev1.IPFamilyPolicySingleStack, fv4, "10.97.0.44")
	stuck.Finalizers = []string{"example.com/hold"}
	if _, err := cl.CoreV1().Services(ns).Update(c.ctx, stuck, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	replaceExtra := []string{"apply", "replace-primary", "--old-cidr", "10.97.0.0/24", "--cidr", "10.98.0.0/24", "--cidr-name", "extra2", "--timeout", "15s", "--confirm"}
	out, errOut := c.run(true, replaceExtra...)
	if !strings.Contains(errOut, ns+"/stuck: waiting for the deletion") || !strings.Contains(out, ns+"/on-extra: done") {
		t.Fatalf("interrupted run:\n%s\n%s", out, errOut)
	}
	if js, _ := cl.CoreV1().ConfigMaps(webhookNS).List(c.ctx, metav1.ListOptions{LabelSelector: ops.LabelOps}); len(js.Items) != 1 {
		t.Fatalf("journal entries after the interruption: %d", len(js.Items))
	}
	if p := c.plan(replaceExtra[1 : len(replaceExtra)-3]...); len(p.Services) != 1 || !p.Services[0].Resume || p.Services[0].Name != "stuck" {
		t.Errorf("plan after the interruption: %+v", p.Services)
	}
	s := c.get(ns, "stuck")
	s.Finalizers = nil
	if _, err := cl.CoreV1().Services(ns).Update(c.ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("stuck to be deleted", func() (bool, string) {
		_, err := cl.CoreV1().Services(ns).Get(c.ctx, "stuck", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	out, _ = c.run(false, replaceExtra...)
	if !strings.Contains(out, ns+"/stuck: done [] -> [10.98.0.44] (resumed from the journal)") {
		t.Errorf("resumed run:\n%s", out)
	}
	if s := c.get(ns, "on-extra"); s.Spec.ClusterIP != "10.98.0.33" {
		t.Errorf("on-extra: %s, want 10.98.0.33", s.Spec.ClusterIP)
	}
	if s := c.get(ns, "stuck"); s.Spec.ClusterIP != "10.98.0.44" || s.Labels["app"] != "stuck" || len(s.Finalizers) != 0 {
		t.Errorf("stuck: %s %v %v", s.Spec.ClusterIP, s.Labels, s.Finalizers)
	}
	c.waitFor("ServiceCIDR extra to be deleted", func() (bool, string) {
		sc, err := cl.NetworkingV1().ServiceCIDRs().Get(c.ctx, "extra", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, "finalizers " + strings.Join(sc.Finalizers, ",")
	})
	// apply waited for that and pruned the drained pool: left in place it
	// would lie outside every ServiceCIDR and invalidate the document.
	if pc := c.pools(); poolNamed(pc, "extra") != nil || poolNamed(pc, "extra2") == nil {
		t.Errorf("pools after the first replacement: %+v", pc)
	}
	if p := c.plan("replace-primary", "--old-cidr", "10.97.0.0/24", "--cidr", "10.98.0.0/24", "--cidr-name", "extra2"); len(p.Steps)+len(p.Services) != 0 {
		t.Errorf("plan after the first replacement: %+v", p)
	}

	// 2. the default range, 10.96.0.0/16 → 10.100.0.0/20.
	sel := map[string]string{"app": "a"}
	a := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"tier": "web"}, Annotations: map[string]string{"example.com/note": "keep"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: sel, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports:           []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
			SessionAffinity: corev1.ServiceAffinityClientIP,
		},
	}
	if _, err := cl.CoreV1().Services(ns).Create(c.ctx, a, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.service(ns, "b", corev1.IPFamilyPolicyRequireDualStack, fv46, "10.96.3.7", "fd00:10:96::7")
	c.service(ns, "far", corev1.IPFamilyPolicySingleStack, fv4, "10.96.200.1") // offset 0xc801 > a /20
	c.service(ns, "v6", corev1.IPFamilyPolicySingleStack, fv6, "fd00:10:96::99")
	// An interrupted run: the journal holds "resumed", the Service is gone.
	gone := c.service(ns, "resumed", corev1.IPFamilyPolicySingleStack, fv4, "10.96.0.77")
	target := ops.Recreated(gone, []string{"10.100.0.77"})
	body, _ := json.Marshal(target)
	if _, err := cl.CoreV1().ConfigMaps(webhookNS).Create(c.ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "dsw-recreate-test", Labels: map[string]string{configmap.LabelManagedBy: configmap.ManagedBy, ops.LabelOps: "recreate"}},
		Data:       map[string]string{"service.json": string(body)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cl.CoreV1().Services(ns).Delete(c.ctx, "resumed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	p := c.plan("replace-primary", "--cidr", "10.100.0.0/20")
	if p.OldCIDR != "10.96.0.0/16" || !slices.Equal(p.Steps[0].ServiceCIDR.CIDRs, []string{"10.100.0.0/20", "fd00:10:96::/108"}) {
		t.Fatalf("plan %+v", p)
	}
	out, _ = c.run(false, "apply", "replace-primary", "--cidr", "10.100.0.0/20", "--confirm")
	for _, s := range []string{ns + "/far [10.96.200.1] -> [10.100.1.1]", "offset not kept: 10.96.200.1: its offset lies outside 10.100.0.0/20, 10.100.1.1 instead", "default/kubernetes: not touched", "resumed from the journal", "not yet: default/kubernetes still holds an address in 10.96.0.0/16"} {
		if !strings.Contains(out, s) {
			t.Errorf("apply output lacks %q", s)
		}
	}
	ga := c.get(ns, "a")
	if ga.Spec.ClusterIP != "10.100.0.10" || ga.UID == a.UID || ga.Labels["tier"] != "web" || ga.Annotations["example.com/note"] != "keep" ||
		ga.Spec.Type != corev1.ServiceTypeNodePort || ga.Spec.Ports[0].NodePort != 30080 || len(ga.Spec.Ports) != 2 ||
		ga.Spec.SessionAffinity != corev1.ServiceAffinityClientIP || ga.Spec.Selector["app"] != "a" {
		t.Errorf("a re-created wrongly: %+v", ga)
	}
	if gb := c.get(ns, "b"); !slices.Equal(gb.Spec.ClusterIPs, []string{"10.100.3.7", "fd00:10:96::7"}) {
		t.Errorf("b: %v", gb.Spec.ClusterIPs)
	}
	// Chosen by apply, not by the apiserver: its allocator would take any
	// ready IPv4 ServiceCIDR, extra2 included (about one time in eight).
	if gf := c.get(ns, "far"); gf.Spec.ClusterIP != "10.100.1.1" {
		t.Errorf("far: %s", gf.Spec.ClusterIP)
	}
	if gv := c.get(ns, "v6"); gv.Spec.ClusterIP != "fd00:10:96::99" {
		t.Errorf("v6 moved: %s", gv.Spec.ClusterIP)
	}
	if gr := c.get(ns, "resumed"); gr.Spec.ClusterIP != "10.100.0.77" {
		t.Errorf("resumed: %s", gr.Spec.ClusterIP)
	}
	if js, _ := cl.CoreV1().ConfigMaps(webhookNS).List(c.ctx, metav1.ListOptions{LabelSelector: ops.LabelOps}); len(js.Items) != 0 {
		t.Errorf("journal left: %d", len(js.Items))
	}
	if k := c.get("default", "kubernetes"); k.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("default/kubernetes touched: %s", k.Spec.ClusterIP)
	}
	// The old default ServiceCIDR: Terminating, kept by the controller while
	// 10.96.0.1 remains, Ready=False.
	c.waitFor("ServiceCIDR kubernetes Ready=False", func() (bool, string) {
		sc := c.serviceCIDR("kubernetes")
		cond := readyCond(sc)
		if sc.DeletionTimestamp == nil || cond == nil {
			return false, "no deletionTimestamp or condition"
		}
		return cond.Status == metav1.ConditionFalse, cond.Reason + ": " + cond.Message
	})
	pc := c.pools()
	if poolNamed(pc, alloc.StaticBandPool).State != alloc.PoolDraining || pc.DefaultPool != "primary-10-100-0-0-20" {
		t.Errorf("pools: %+v", pc)
	}
	// A new Service no longer lands in the old range (it may land in the
	// new one or in extra2, the other ready IPv4 ServiceCIDR).
	if s := c.service(ns, "new", corev1.IPFamilyPolicySingleStack, fv4); inPrefix("10.96.0.0/16", s.Spec.ClusterIP) || !(inPrefix("10.100.0.0/20", s.Spec.ClusterIP) || inPrefix("10.98.0.0/24", s.Spec.ClusterIP)) {
		t.Errorf("new Service got %s", s.Spec.ClusterIP)
	}
	// Re-run: every Service is done; the ServiceCIDR is not deleted twice.
	out, _ = c.run(false, "apply", "replace-primary", "--cidr", "10.100.0.0/20", "--old-cidr", "10.96.0.0/16", "--confirm")
	if strings.Contains(out, ": done") {
		t.Errorf("second apply changed Services:\n%s", out)
	}
}
