package pinning

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// The guard instance: a second webhook on the shared control plane with its
// own state namespace and a pools ConfigMap of its own (addresses clear of the
// static band the "pin" instance uses), so that editing pools cannot disturb
// the other tests.
const (
	instGuard  = "guard"
	guardState = "dsw-guard-state"
	guardPools = "guard-pools"
)

const guardDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: guard
pools:
- name: guard
  addresses:
    ipv4: ["10.96.2.1-10.96.2.20"]
    ipv6: ["fd00:10:96::201-fd00:10:96::220"]
`

// TestPoolsGuard: /validate guards the pools ConfigMap (registered as the
// chart does: the release namespace, objects labelled
// dualstack-webhook.io/pools=true). Overlapping pools, pools outside the
// ServiceCIDRs and a change dropping an address in use are denied with a
// message naming the pool and the address; a valid change is admitted and
// the webhook then allocates from it.
func TestPoolsGuard(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	if err := framework.EnsureNamespace(ctx, c, guardState, nil); err != nil {
		t.Fatal(err)
	}
	cms := c.CoreV1().ConfigMaps(guardState)
	if _, err := cms.Create(ctx, framework.PoolsConfigMap(guardState, guardPools, guardDoc), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, _, err := env.StartWebhook(ctx, instGuard, framework.WebhookOptions{
		ServiceCIDRs: framework.DualStackCIDRs,
		Namespace:    guardState,
		ExtraArgs:    append([]string{"--pools-configmap", guardPools}, pinFlags...),
	})
	if err != nil {
		t.Fatalf("guard webhook: %v", err)
	}
	hookName := registerPoolsGuard(t, env, w, instGuard, guardState, guardPools)

	// A Service of the guard instance takes the lowest address of its pool.
	ns := scoped(t, c, instGuard, "guarded")
	sv, err := c.CoreV1().Services(ns).Create(ctx, newService("holder", framework.WithPolicy("RequireDualStack")), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ips := addrs(t, sv)
	want := []netip.Addr{netip.MustParseAddr("10.96.2.1"), netip.MustParseAddr("fd00:10:96::201")}
	if fmt.Sprint(ips) != fmt.Sprint(want) {
		t.Fatalf("Service of the guard pool got %v, want %v (lowest of pool guard)", ips, want)
	}
	for _, ip := range ips {
		waitBound(t, c, guardState, ip, ns, "holder")
	}

	put := func(doc string) error {
		cm, err := cms.Get(ctx, guardPools, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["pools.yaml"] = doc
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	}
	denied := []struct {
		name  string
		doc   string
		parts []string
	}{
		{"overlapping pools", guardDoc + `- name: overlap
  addresses:
    ipv4: ["10.96.2.10-10.96.2.30"]
`, []string{`"overlap"`, "10.96.2.10"}},
		{"pool outside every ServiceCIDR", guardDoc + `- name: outside
  addresses:
    ipv4: ["10.97.0.1-10.97.0.9"]
`, []string{`"outside"`, "10.97.0.1"}},
		{"in-use IPv4 address removed", strings.Replace(guardDoc, "10.96.2.1-10.96.2.20", "10.96.2.5-10.96.2.20", 1),
			[]string{`"guard"`, "10.96.2.1"}},
		{"in-use IPv6 address removed", strings.Replace(guardDoc, `ipv6: ["fd00:10:96::201-fd00:10:96::220"]`, `ipv6: ["fd00:10:96::202-fd00:10:96::220"]`, 1),
			[]string{`"guard"`, "fd00:10:96::201"}},
	}
	for _, tc := range denied {
		t.Run(tc.name, func(t *testing.T) {
			err := put(tc.doc)
			wantDenied(t, "update of the pools ConfigMap", err, append([]string{hookName}, tc.parts...)...)
			t.Logf("denied: %s", errText(err))
		})
	}

	// A valid change (a second pool for one namespace) is admitted and used.
	extraNS := scoped(t, c, instGuard, "extra")
	extra := guardDoc + fmt.Sprintf(`- name: extra
  namespaces: [%s]
  addresses:
    ipv4: ["10.96.3.1-10.96.3.10"]
`, extraNS)
	if err := put(extra); err != nil {
		t.Fatalf("valid change (a second, disjoint pool) denied: %v", err)
	}
	framework.Eventually(t, 30*time.Second, "a Service of namespace "+extraNS+" gets its address from the new pool extra", func(ctx context.Context) (bool, string) {
		got, err := c.CoreV1().Services(extraNS).Create(ctx, newService("extra"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err.Error()
		}
		return got.Spec.ClusterIP == "10.96.3.1", "clusterIP " + got.Spec.ClusterIP
	})
}

// registerPoolsGuard registers w's /validate for the pools ConfigMap
// stateNS/cmName of instance inst the way the chart does and waits until a
// malformed document is denied by it; it returns the webhook's name as the
// apiserver quotes it.
func registerPoolsGuard(t *testing.T, env *framework.Env, w *framework.Webhook, inst, stateNS, cmName string) string {
	t.Helper()
	c := env.Client
	ctx := context.Background()
	name := "pools." + inst + ".e2e.dualstack-webhook.io"
	url := w.URL + "/validate"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "dualstack-webhook-e2e-pools-" + inst},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: w.CABundle},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": stateNS}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"dualstack-webhook.io/pools": "true"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register the pools guard: %v", err)
	}
	t.Cleanup(func() {
		_ = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
	// Probe: a dry-run update of the pools ConfigMap with a malformed document.
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		cm, err := c.CoreV1().ConfigMaps(stateNS).Get(ctx, cmName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		cm.Data["pools.yaml"] = "apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\nbogus: 1\n"
		_, err = c.CoreV1().ConfigMaps(stateNS).Update(ctx, cm, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
		last = errText(err)
		return err != nil && strings.Contains(err.Error(), name), nil
	})
	if err != nil {
		t.Fatalf("pools guard not effective (a dry-run update of %s/%s with an unknown field must be denied by %s): %v (last answer: %s)", stateNS, cmName, name, err, last)
	}
	return name
}
