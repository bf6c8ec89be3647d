package pinning

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// The tenancy instance: its own webhook, state namespace and pools
// ConfigMap (addresses clear of every other instance's), so that editing
// its pools disturbs no other test.
const (
	instTenant  = "tenant"
	tenantState = "dsw-tenant-state"
	tenantPools = "tenant-pools"
)

// tenantDoc: an open default pool and a pool "payments" for the namespace
// payNS and namespaces labelled e2e-team=payments.
func tenantDoc(payNS, extra string) string {
	return fmt.Sprintf(`apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: open
pools:
- name: open
  addresses:
    ipv4: ["10.96.5.1-10.96.5.20"]
    ipv6: ["fd00:10:96::5:1-fd00:10:96::5:20"]
- name: payments
  namespaces: [%s]
%s  addresses:
    ipv4: ["10.96.5.100-10.96.5.120"]
    ipv6: ["fd00:10:96::5:100-fd00:10:96::5:120"]
`, payNS, extra)
}

const teamSelector = "  namespaceSelector: {matchLabels: {e2e-team: payments}}\n"

// TestPoolTenancy, through the real apiserver: a Service of another
// namespace can neither name the restricted pool "payments" nor take one of
// its addresses (IPv4, IPv6, both dual-stack orders), and is told which
// pool serves whom; the pool's own namespaces (listed or labelled) are
// served; the default pool stays open. A pools change that would leave a
// bound Service outside its pool is denied by the pools guard, and a
// Service whose Namespace loses the label keeps its address.
func TestPoolTenancy(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	payNS := scoped(t, c, instTenant, "payments")
	teamNS, err := framework.Namespace(ctx, c, "team", map[string]string{framework.ScopeLabel: instTenant, "e2e-team": "payments"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	shopNS := scoped(t, c, instTenant, "shop")
	if err := framework.EnsureNamespace(ctx, c, tenantState, nil); err != nil {
		t.Fatal(err)
	}
	doc := tenantDoc(payNS, teamSelector)
	if _, err := c.CoreV1().ConfigMaps(tenantState).Create(ctx, framework.PoolsConfigMap(tenantState, tenantPools, doc), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, _, err := env.StartWebhook(ctx, instTenant, framework.WebhookOptions{
		ServiceCIDRs: framework.DualStackCIDRs,
		Namespace:    tenantState,
		ExtraArgs:    append([]string{"--pools-configmap", tenantPools}, pinFlags...),
	})
	if err != nil {
		t.Fatalf("tenant webhook: %v", err)
	}
	audience := fmt.Sprintf(`serves only namespaces [%s] or namespaces matching e2e-team=payments; %s/`, payNS, shopNS)
	svcs := c.CoreV1().Services
	annotated := func(s *corev1.Service) {
		s.Annotations = map[string]string{"dualstack-webhook.io/pool": "payments"}
	}

	orders := map[string][]corev1.IPFamily{"IPv4": {v4}, "IPv6": {v6}, "IPv4,IPv6": {v4, v6}, "IPv6,IPv4": {v6, v4}}
	first := map[corev1.IPFamily]string{v4: "10.96.5.110", v6: "fd00:10:96::5:110"}
	for oname, fams := range orders {
		pol := corev1.IPFamilyPolicySingleStack
		if len(fams) == 2 {
			pol = corev1.IPFamilyPolicyRequireDualStack
		}
		t.Run(oname, func(t *testing.T) {
			name := "web-" + strings.ToLower(strings.ReplaceAll(oname, ",", "-"))
			// The annotation from shop: denied, nothing reserved.
			_, err := svcs(shopNS).Create(ctx, newService(name, annotated, framework.WithPolicy(pol), framework.WithFamilies(fams...)), metav1.CreateOptions{})
			wantDenied(t, "pool payments named from "+shopNS, err, `metadata.annotations[dualstack-webhook.io/pool]: Forbidden: pool "payments" `+audience+name+" is not one of them")
			// An explicit address of the pool from shop: denied.
			var ips []string
			for _, f := range fams {
				ips = append(ips, first[f])
			}
			_, err = svcs(shopNS).Create(ctx, newService(name, framework.WithPolicy(pol), framework.WithFamilies(fams...), framework.WithClusterIPs(ips...)), metav1.CreateOptions{})
			wantDenied(t, "address of pool payments asked from "+shopNS, err,
				fmt.Sprintf(`spec.clusterIPs: Forbidden: IP %s belongs to pool "payments", which `, ips[0])+audience+name+" is not one of them")
			// Unannotated, shop is served by the open default pool.
			sv, err := svcs(shopNS).Create(ctx, newService(name, framework.WithPolicy(pol), framework.WithFamilies(fams...)), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range addrs(t, sv) {
				if !strings.HasPrefix(a.String(), "10.96.5.") && !strings.HasPrefix(a.String(), "fd00:10:96::5:") || inPayments(a) {
					t.Errorf("%s/%s got %s, want an address of the open pool", shopNS, name, a)
				}
			}
		})
	}
	for _, ip := range []string{"10.96.5.110", "fd00:10:96::5:110"} {
		if r, ok := reservationOf(ctx, t, c, tenantState, netip.MustParseAddr(ip)); ok {
			t.Errorf("a denied request left a reservation of %s: %s", ip, r)
		}
	}

	// The listed namespace names the pool; the labelled one asks for an
	// address of it.
	api, err := svcs(payNS).Create(ctx, newService("api", annotated, framework.WithPolicy("RequireDualStack")), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pool payments named from %s: %v", payNS, err)
	}
	for _, a := range addrs(t, api) {
		if !inPayments(a) {
			t.Errorf("%s/api got %s, want an address of pool payments", payNS, a)
		}
	}
	held, err := svcs(teamNS).Create(ctx, newService("ledger", framework.WithPolicy("RequireDualStack"), framework.WithFamilies(v6, v4),
		framework.WithClusterIPs("fd00:10:96::5:115", "10.96.5.115")), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("address of pool payments asked from the labelled namespace %s: %v", teamNS, err)
	}
	for _, a := range addrs(t, held) {
		waitBound(t, c, tenantState, a, teamNS, "ledger")
	}

	// The pools guard refuses a change that leaves teamNS/ledger outside.
	hookName := registerPoolsGuard(t, env, w, instTenant, tenantState, tenantPools)
	cms := c.CoreV1().ConfigMaps(tenantState)
	cm, err := cms.Get(ctx, tenantPools, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["pools.yaml"] = tenantDoc(payNS, "")
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	wantDenied(t, "dropping the namespaceSelector that serves "+teamNS+"/ledger", err, hookName,
		fmt.Sprintf(`address 10.96.5.115 is bound to %s/ledger, which the pool would no longer serve (it would serve only namespaces [%s])`, teamNS, payNS),
		"fd00:10:96::5:115")
	t.Logf("denied: %s", errText(err))

	// The Namespace loses its label: the Service keeps its addresses, is
	// still editable, and the reconciler leaves its reservations bound.
	nsObj, err := c.CoreV1().Namespaces().Get(ctx, teamNS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(nsObj.Labels, "e2e-team")
	if _, err := c.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	after := update(t, c, teamNS, "ledger", func(s *corev1.Service) { s.Labels["edited"] = "yes" })
	if fmt.Sprint(after.Spec.ClusterIPs) != fmt.Sprint(held.Spec.ClusterIPs) {
		t.Fatalf("%s/ledger changed addresses %v -> %v", teamNS, held.Spec.ClusterIPs, after.Spec.ClusterIPs)
	}
	for _, a := range addrs(t, after) {
		waitBound(t, c, tenantState, a, teamNS, "ledger")
	}

	skipLabelled(t, env, w, payNS, shopNS)
}

// skipLabelled: registered as the chart does (the skip label's
// objectSelector on the mutating webhook only), a Service of shop labelled
// dualstack-webhook.io/skip=true is not defaulted or pinned, but the
// validating webhook still denies it an address of pool payments and an
// address sticky for a deleted Service of another namespace, in every
// family order; it may take a free address of the open pool, and one that
// asks for no address is created as the apiserver allocates it.
func skipLabelled(t *testing.T, env *framework.Env, w *framework.Webhook, payNS, shopNS string) {
	ctx := context.Background()
	c := env.Client
	reg := framework.Registration{Name: instTenant, URL: w.URL, CABundle: w.CABundle, MutatingObjectSelector: framework.SkipLabelSelector()}
	if err := framework.Register(ctx, c, reg); err != nil {
		t.Fatal(err)
	}
	probe, err := framework.Namespace(ctx, c, "probe-skip", map[string]string{framework.ScopeLabel: instTenant}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitEffective(ctx, c, probe, reg.MutatingName(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	svcs := c.CoreV1().Services
	skip := withLabel(framework.SkipLabel, "true")
	// The apiserver loads the new configurations asynchronously: once
	// they are in force, a skip-labelled Service reaches /validate only.
	calls := func(endpoint string) float64 {
		v, _, _ := w.Metric("dualstack_webhook_http_request_duration_seconds_count", map[string]string{"endpoint": endpoint})
		return v
	}
	framework.Eventually(t, 30*time.Second, "registered as the chart: skip-labelled Services reach /validate, not /mutate", func(ctx context.Context) (bool, string) {
		m0, v0 := calls("mutate"), calls("validate")
		_, err := svcs(shopNS).Create(ctx, newService("skip-probe", skip), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		m1, v1 := calls("mutate"), calls("validate")
		return err == nil && m1 == m0 && v1 > v0, fmt.Sprintf("create: %s; /mutate calls +%g, /validate +%g", errText(err), m1-m0, v1-v0)
	})

	// A Service of another namespace, pinned from the open pool, then
	// deleted: its addresses stay sticky to it.
	otherNS := scoped(t, c, instTenant, "other")
	gone, err := svcs(otherNS).Create(ctx, newService("gone", framework.WithPolicy("RequireDualStack")), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sticky := map[corev1.IPFamily]string{}
	for _, a := range addrs(t, gone) {
		waitBound(t, c, tenantState, a, otherNS, "gone")
		sticky[familyOf(a)] = a.String()
	}
	if err := svcs(otherNS).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range sticky {
		framework.Eventually(t, 30*time.Second, "reservation of "+ip+" sticky to "+otherNS+"/gone", func(ctx context.Context) (bool, string) {
			r, ok := reservationOf(ctx, t, c, tenantState, netip.MustParseAddr(ip))
			return ok && r.State == "sticky" && r.Namespace == otherNS && r.Name == "gone", r.String()
		})
	}

	orders := map[string][]corev1.IPFamily{"IPv4": {v4}, "IPv6": {v6}, "IPv4,IPv6": {v4, v6}, "IPv6,IPv4": {v6, v4}}
	pay := map[corev1.IPFamily]string{v4: "10.96.5.112", v6: "fd00:10:96::5:112"}
	free := map[string]map[corev1.IPFamily]string{
		"IPv4": {v4: "10.96.5.16"}, "IPv6": {v6: "fd00:10:96::5:16"},
		"IPv4,IPv6": {v4: "10.96.5.17", v6: "fd00:10:96::5:17"}, "IPv6,IPv4": {v4: "10.96.5.18", v6: "fd00:10:96::5:18"},
	}
	audience := fmt.Sprintf(`which serves only namespaces [%s] or namespaces matching e2e-team=payments; %s/`, payNS, shopNS)
	for oname, fams := range orders {
		pol := corev1.IPFamilyPolicySingleStack
		if len(fams) == 2 {
			pol = corev1.IPFamilyPolicyRequireDualStack
		}
		t.Run("skip-labelled "+oname, func(t *testing.T) {
			name := "skip-" + strings.ToLower(strings.ReplaceAll(oname, ",", "-"))
			ask := func(m map[corev1.IPFamily]string) *corev1.Service {
				var ips []string
				for _, f := range fams {
					ips = append(ips, m[f])
				}
				return newService(name, skip, framework.WithPolicy(pol), framework.WithFamilies(fams...), framework.WithClusterIPs(ips...))
			}
			// Another team's restricted pool: denied by the validating
			// webhook, with the pool and whom it serves.
			_, err := svcs(shopNS).Create(ctx, ask(pay), metav1.CreateOptions{})
			wantDenied(t, "skip-labelled, an address of pool payments", err, reg.ValidatingName(),
				fmt.Sprintf(`spec.clusterIPs: Forbidden: IP %s belongs to pool "payments", `, pay[fams[0]])+audience+name+" is not one of them")
			// Sticky for another namespace's deleted Service: denied,
			// naming it (the apiserver alone would hand it out: the
			// address is free in its eyes).
			_, err = svcs(shopNS).Create(ctx, ask(sticky), metav1.CreateOptions{})
			wantDenied(t, "skip-labelled, an address sticky for "+otherNS+"/gone", err, reg.ValidatingName(),
				fmt.Sprintf("IP %s is held by %s/gone (sticky)", sticky[fams[0]], otherNS))
			// A free address of the open pool: created with it, no
			// defaulting or pinning by the webhook.
			sv, err := svcs(shopNS).Create(ctx, ask(free[oname]), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("skip-labelled, a free address of the open pool: %v", err)
			}
			for i, a := range addrs(t, sv) {
				if a.String() != free[oname][fams[i]] {
					t.Errorf("%s/%s got %v, want %v", shopNS, name, sv.Spec.ClusterIPs, free[oname])
				}
			}
		})
	}
	// No address asked: created, the apiserver allocates.
	if _, err := svcs(shopNS).Create(ctx, newService("skip-dynamic", skip), metav1.CreateOptions{}); err != nil {
		t.Fatalf("skip-labelled Service asking for no address: %v", err)
	}
	for _, ip := range []string{"10.96.5.112", "fd00:10:96::5:112"} {
		if r, ok := reservationOf(ctx, t, c, tenantState, netip.MustParseAddr(ip)); ok {
			t.Errorf("a denied skip-labelled request left a reservation of %s: %s", ip, r)
		}
	}
}

// inPayments reports whether a lies in the tenancy test's pool payments.
func inPayments(a netip.Addr) bool {
	for _, r := range []addrRange{
		{netip.MustParseAddr("10.96.5.100"), netip.MustParseAddr("10.96.5.120")},
		{netip.MustParseAddr("fd00:10:96::5:100"), netip.MustParseAddr("fd00:10:96::5:120")},
	} {
		if r.contains(a) {
			return true
		}
	}
	return false
}
