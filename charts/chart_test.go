// Package charts tests the Helm chart in dualstack-webhook/: `helm lint
// --strict`, golden `helm template` output for the main value combinations
// (regenerate with `go test ./charts -update`), and invariants every
// rendering must keep (the registration layout of docs/architecture.md, least-privilege RBAC, the
// restricted pod security profile), checked on the decoded objects so that a
// golden update cannot silently bless a regression.
//
// helm comes from $HELM or <repo>/.k8s-bin/current/helm (e2e/bin/install.sh).
// Without it the tests skip, unless E2E_REQUIRED=1 (as under `make test`).
package charts

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current chart")

const (
	chartDir    = "dualstack-webhook"
	release     = "dsw"
	namespace   = "dualstack-webhook"
	kubeVersion = "1.37.2"
)

// cases are the value files under testdata/values and the certs mode each
// selects.
var cases = map[string]string{
	"cert-manager":   "certManager",
	"self-bootstrap": "selfBootstrap",
	"secret":         "secret",
	"full":           "certManager",
	"policy":         "certManager",
}

// policyCases render defaulting.mode=policy: no defaulting webhook, a
// MutatingAdmissionPolicy instead.
var policyCases = map[string]bool{"policy": true}

func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, _ := filepath.Abs(filepath.Join("..", ".k8s-bin", "current", "helm"))
	if _, err := os.Stat(h); err != nil {
		msg := fmt.Sprintf("helm not found at %s (run e2e/bin/install.sh or set HELM)", h)
		if v := os.Getenv("E2E_REQUIRED"); v == "1" || v == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return h
}

func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func render(t *testing.T, valuesFile string, set ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	if valuesFile != "" {
		args = append(args, "-f", valuesFile)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return helm(t, args...)
}

func TestLint(t *testing.T) {
	for name := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", chartDir, "--namespace", namespace, "--kube-version", kubeVersion,
				"-f", filepath.Join("testdata", "values", name+".yaml"))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	for name := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, filepath.Join("testdata", "values", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./charts -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("helm template differs from %s (run go test ./charts -update and review the diff):\n%s", golden, firstDiff(want, got))
			}
		})
	}
}

// firstDiff shows the first differing line with some context.
func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return "(same lines, different bytes)"
}

// rendered is a rendering decoded into typed objects.
type rendered struct {
	objs    []runtime.Object
	unknown []*unstructured.Unstructured // cert-manager and monitoring kinds
}

func decode(t *testing.T, manifest []byte) rendered {
	t.Helper()
	var r rendered
	for doc := range strings.SplitSeq(string(manifest), "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if runtime.IsNotRegisteredError(err) {
			u := &unstructured.Unstructured{}
			j, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if err := u.UnmarshalJSON(j); err != nil {
				t.Fatal(err)
			}
			r.unknown = append(r.unknown, u)
			continue
		}
		if err != nil {
			t.Fatalf("decoding rendered document: %v\n%s", err, doc)
		}
		r.objs = append(r.objs, obj)
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func find[T runtime.Object](r rendered) []T {
	var out []T
	for _, o := range r.objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func one[T runtime.Object](t *testing.T, r rendered) T {
	t.Helper()
	all := find[T](r)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, got %d", zero, len(all))
	}
	return all[0]
}

// TestInvariants checks, for every case, what the registration layout (docs/architecture.md) and the chart README
// require of the rendered objects.
func TestInvariants(t *testing.T) {
	for name, mode := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, filepath.Join("testdata", "values", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			r := decode(t, out)
			checkWebhooks(t, r, mode, !policyCases[name])
			checkDeployment(t, r, mode)
			checkRBAC(t, r, mode)
			checkService(t, r)
			if pdb := one[*policyv1.PodDisruptionBudget](t, r); pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
				t.Error("PodDisruptionBudget without minAvailable or maxUnavailable")
			}
			checkCertManager(t, r, mode)
		})
	}
}

func checkWebhooks(t *testing.T, r rendered, mode string, defaultingWebhook bool) {
	t.Helper()
	m := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, r)
	v := one[*admissionregistrationv1.ValidatingWebhookConfiguration](t, r)
	for _, meta := range []map[string]string{m.Annotations, v.Annotations} {
		inj, ok := meta["cert-manager.io/inject-ca-from"]
		if (mode == "certManager") != ok {
			t.Errorf("inject-ca-from present=%v in mode %s", ok, mode)
		}
		if ok && inj != namespace+"/dsw-dualstack-webhook-serving" {
			t.Errorf("inject-ca-from = %q", inj)
		}
	}
	byName := map[string]admissionregistrationv1.MutatingWebhook{}
	for _, w := range m.Webhooks {
		byName[w.Name] = w
	}
	def, pin := byName["defaulting.dualstack-webhook.io"], byName["pinning.dualstack-webhook.io"]
	if (def.Name != "") != defaultingWebhook || pin.Name == "" {
		t.Fatalf("mutating webhooks %v, want pinning and, unless defaulting.mode=policy, defaulting", m.Webhooks)
	}
	type expect struct {
		side admissionregistrationv1.SideEffectClass
		fp   admissionregistrationv1.FailurePolicyType
	}
	type hook struct {
		w    admissionregistrationv1.MutatingWebhook
		want expect
	}
	hooks := []hook{{pin, expect{admissionregistrationv1.SideEffectClassNoneOnDryRun, admissionregistrationv1.Fail}}}
	if defaultingWebhook {
		hooks = append(hooks, hook{def, expect{admissionregistrationv1.SideEffectClassNone, admissionregistrationv1.Ignore}})
	}
	for _, tc := range hooks {
		w := tc.w
		if *w.SideEffects != tc.want.side || *w.FailurePolicy != tc.want.fp {
			t.Errorf("%s: sideEffects %s failurePolicy %s, want %s %s", w.Name, *w.SideEffects, *w.FailurePolicy, tc.want.side, tc.want.fp)
		}
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy is not IfNeeded", w.Name)
		}
		checkServiceWebhook(t, w.Name, w.ClientConfig, w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, w.Rules, w.AdmissionReviewVersions, w.TimeoutSeconds, mode, true)
	}
	if defaultingWebhook && *def.TimeoutSeconds > 5 {
		t.Errorf("defaulting timeout %ds: fail-open defaulting should answer or give up fast", *def.TimeoutSeconds)
	}
	var sawValidating bool
	for _, w := range v.Webhooks {
		if w.Name == "pools.dualstack-webhook.io" {
			if *w.FailurePolicy != admissionregistrationv1.Ignore {
				t.Error("pools validation must fail open (a webhook down over bad pools must not block fixing them)")
			}
			if w.ObjectSelector.MatchLabels["dualstack-webhook.io/pools"] != "true" ||
				w.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != namespace {
				t.Errorf("pools webhook not scoped to the pools ConfigMap of %s", namespace)
			}
			continue
		}
		sawValidating = true
		if *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("%s: sideEffects %s", w.Name, *w.SideEffects)
		}
		// Skip-labelled Services are sent to the validating webhook
		// (it checks the addresses they ask for); the Namespace label
		// still keeps a whole namespace out.
		checkServiceWebhook(t, w.Name, w.ClientConfig, w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, w.Rules, w.AdmissionReviewVersions, w.TimeoutSeconds, mode, false)
	}
	if !sawValidating {
		t.Error("no Service validating webhook")
	}
}

func checkServiceWebhook(t *testing.T, name string, cc admissionregistrationv1.WebhookClientConfig,
	nsSel, objSel interface{ String() string }, mc []admissionregistrationv1.MatchCondition,
	rules []admissionregistrationv1.RuleWithOperations, versions []string, timeout *int32, mode string, skipObjects bool) {
	t.Helper()
	if cc.Service == nil || cc.Service.Name != "dsw-dualstack-webhook" || cc.Service.Namespace != namespace {
		t.Errorf("%s: clientConfig.service %+v", name, cc.Service)
	}
	if (mode == "secret") != (len(cc.CABundle) > 0) {
		t.Errorf("%s: caBundle set=%v in mode %s (only secret mode renders one)", name, len(cc.CABundle) > 0, mode)
	}
	ns := nsSel.String()
	for _, want := range []string{"kube-system", namespace, "dualstack-webhook.io/skip"} {
		if !strings.Contains(ns, want) {
			t.Errorf("%s: namespaceSelector %s does not exclude %s", name, ns, want)
		}
	}
	if obj := objSel.String(); strings.Contains(obj, `Key:dualstack-webhook.io/skip,Operator:NotIn,Values:[true]`) != skipObjects {
		t.Errorf("%s: objectSelector %s: honours the Service skip label %v, want %v", name, obj, !skipObjects, skipObjects)
	}
	if len(mc) != 1 || !strings.Contains(mc[0].Expression, "object.spec.type != 'ExternalName'") ||
		!strings.Contains(mc[0].Expression, "request.operation == 'DELETE'") {
		t.Errorf("%s: matchConditions %+v do not skip ExternalName safely", name, mc)
	}
	if !slices.Equal(versions, []string{"v1", "v1beta1"}) {
		t.Errorf("%s: admissionReviewVersions %v", name, versions)
	}
	if timeout == nil || *timeout < 1 || *timeout > 30 {
		t.Errorf("%s: timeoutSeconds %v", name, timeout)
	}
	if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"services"}) ||
		!slices.Equal(rules[0].Operations, []admissionregistrationv1.OperationType{"CREATE", "UPDATE"}) {
		t.Errorf("%s: rules %+v", name, rules)
	}
}

func checkDeployment(t *testing.T, r rendered, mode string) {
	t.Helper()
	d := one[*appsv1.Deployment](t, r)
	if *d.Spec.Replicas < 2 {
		t.Errorf("replicas %d, want ≥ 2", *d.Spec.Replicas)
	}
	if len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
		t.Error("no topology spread")
	}
	ps := d.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v is not restricted", ps)
	}
	c := d.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container securityContext %+v is not restricted", sc)
	}
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Scheme != corev1.URISchemeHTTPS || probe.HTTPGet.Port.String() != "https" {
			t.Errorf("probe %+v, want HTTPS %s on the TLS port", probe, want)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v incomplete", c.Resources)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"serve", "--listen=:8443", "--metrics-listen=:8080", "--namespace=" + namespace} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
	files := strings.Contains(args, "--tls-cert-file=/certs/tls.crt") && strings.Contains(args, "--tls-key-file=/certs/tls.key")
	boot := strings.Contains(args, "--tls-bootstrap-secret=")
	if files == (mode == "selfBootstrap") || boot != (mode == "selfBootstrap") {
		t.Errorf("mode %s: args %q", mode, args)
	}
	var mounted bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			mounted = true
		}
	}
	if mounted == (mode == "selfBootstrap") {
		t.Errorf("mode %s: certificate Secret mounted=%v", mode, mounted)
	}
}

func checkRBAC(t *testing.T, r rendered, mode string) {
	t.Helper()
	var secretRules, webhookRules []rbacv1.PolicyRule
	for _, cr := range find[*rbacv1.ClusterRole](r) {
		for _, rule := range cr.Rules {
			for _, res := range rule.Resources {
				switch res {
				case "secrets", "configmaps", "leases":
					t.Errorf("ClusterRole %s grants %s cluster-wide", cr.Name, res)
				case "mutatingwebhookconfigurations", "validatingwebhookconfigurations":
					webhookRules = append(webhookRules, rule)
				case "services", "namespaces", "servicecidrs", "ipaddresses":
					if !slices.Equal(rule.Verbs, []string{"get", "list", "watch"}) {
						t.Errorf("ClusterRole %s: %s verbs %v, want read-only", cr.Name, res, rule.Verbs)
					}
				}
			}
		}
	}
	for _, role := range find[*rbacv1.Role](r) {
		if role.Namespace != namespace {
			t.Errorf("Role %s in %s", role.Name, role.Namespace)
		}
		for _, rule := range role.Rules {
			if slices.Contains(rule.Resources, "secrets") {
				secretRules = append(secretRules, rule)
			}
		}
	}
	if (mode == "selfBootstrap") != (len(secretRules) > 0) {
		t.Errorf("mode %s: Secret rules %v", mode, secretRules)
	}
	for _, rule := range secretRules {
		if len(rule.ResourceNames) == 0 && !slices.Equal(rule.Verbs, []string{"create"}) {
			t.Errorf("Secret rule %v not limited by name", rule)
		}
	}
	if (mode == "selfBootstrap") != (len(webhookRules) > 0) {
		t.Errorf("mode %s: webhook configuration rules %v", mode, webhookRules)
	}
	for _, rule := range webhookRules {
		if !slices.Equal(rule.ResourceNames, []string{"dsw-dualstack-webhook"}) || !slices.Equal(rule.Verbs, []string{"get", "patch"}) {
			t.Errorf("webhook configuration rule %+v, want get/patch by name", rule)
		}
	}
}

func checkService(t *testing.T, r rendered) {
	t.Helper()
	s := one[*corev1.Service](t, r)
	if s.Spec.IPFamilyPolicy == nil || *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack {
		t.Errorf("Service ipFamilyPolicy %v, want PreferDualStack", s.Spec.IPFamilyPolicy)
	}
}

func checkCertManager(t *testing.T, r rendered, mode string) {
	t.Helper()
	kinds := map[string]int{}
	var serving *unstructured.Unstructured
	for _, u := range r.unknown {
		if u.GroupVersionKind().Group != "cert-manager.io" {
			continue
		}
		kinds[u.GetKind()]++
		if isCA, _, _ := unstructured.NestedBool(u.Object, "spec", "isCA"); u.GetKind() == "Certificate" && !isCA {
			serving = u
		}
	}
	if mode != "certManager" {
		if len(kinds) > 0 {
			t.Errorf("mode %s renders cert-manager objects %v", mode, kinds)
		}
		return
	}
	if kinds["Issuer"] != 2 || kinds["Certificate"] != 2 {
		t.Fatalf("cert-manager objects %v, want 2 Issuers (selfSigned, CA) and 2 Certificates (CA, serving)", kinds)
	}
	if serving == nil {
		t.Fatal("no serving Certificate")
	}
	issuer, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name")
	if issuer != "dsw-dualstack-webhook-ca" {
		t.Errorf("serving Certificate issued by %q, want the CA Issuer (never the selfSigned one, cert-manager#5519)", issuer)
	}
	dns, _, _ := unstructured.NestedStringSlice(serving.Object, "spec", "dnsNames")
	if !slices.Contains(dns, "dsw-dualstack-webhook."+namespace+".svc") {
		t.Errorf("serving dnsNames %v lack the name the apiserver dials", dns)
	}
}

// TestGoMemLimit: the container's GOMEMLIMIT is goMemLimitPercent of the
// memory limit (in KiB, rounded down) unless goMemLimit is given, and absent
// without a memory limit.
func TestGoMemLimit(t *testing.T) {
	tests := map[string]struct {
		set  []string
		want string // "" = no GOMEMLIMIT
	}{
		"the defaults: 85% of 256Mi":     {nil, "222822KiB"},
		"Gi":                             {[]string{"resources.limits.memory=1Gi"}, "891289KiB"},
		"decimal M":                      {[]string{"resources.limits.memory=300M"}, "249023KiB"},
		"bytes":                          {[]string{"resources.limits.memory=1073741824"}, "891289KiB"},
		"another percent":                {[]string{"resources.limits.memory=200Mi", "goMemLimitPercent=50"}, "102400KiB"},
		"given outright":                 {[]string{"goMemLimit=100MiB"}, "100MiB"},
		"given outright, odd limit":      {[]string{"goMemLimit=off", "resources.limits.memory=1.5Gi"}, "off"},
		"no memory limit, no GOMEMLIMIT": {[]string{"resources.limits=null"}, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, "", tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			c := one[*appsv1.Deployment](t, decode(t, out)).Spec.Template.Spec.Containers[0]
			got := ""
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					got = e.Value
				}
			}
			if got != tc.want {
				t.Errorf("GOMEMLIMIT %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRefusedValues: combinations the chart must refuse with a message.
func TestRefusedValues(t *testing.T) {
	tests := map[string]struct {
		set  []string
		want string
	}{
		"secret mode without a Secret":                     {[]string{"certs.mode=secret", "certs.secret.caBundle=Zm9v"}, "certs.secret.name is required"},
		"secret mode without a caBundle":                   {[]string{"certs.mode=secret", "certs.secret.name=x"}, "certs.secret.caBundle is required"},
		"an unknown certs mode":                            {[]string{"certs.mode=vault"}, "certs/mode"},
		"both PDB bounds":                                  {[]string{"podDisruptionBudget.maxUnavailable=1"}, "only one of"},
		"a misspelt top-level key":                         {[]string{"replicas=3"}, "replicas"},
		"a pools document of another kind":                 {[]string{"pools.apiVersion=dualstack-webhook.io/v1alpha1", "pools.kind=Pools"}, "kind"},
		"an unknown failurePolicy":                         {[]string{"webhook.pinning.failurePolicy=Never"}, "failurePolicy"},
		"a memory limit GOMEMLIMIT cannot be derived from": {[]string{"resources.limits.memory=1.5Gi"}, "set goMemLimit"},
		"a goMemLimitPercent out of range":                 {[]string{"goMemLimitPercent=0"}, "goMemLimitPercent"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "", tc.set...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	// And the defaults render (so the failures above are about the values).
	if _, err := render(t, ""); err != nil {
		t.Fatal(err)
	}
}

// TestPoolsStaleAlert: the alert on dualstack_webhook_pools_stale follows
// the metric-name indirection and its duration knob, and fires on 1 only.
func TestPoolsStaleAlert(t *testing.T) {
	for name, tc := range map[string]struct {
		set          []string
		metric, wait string
	}{
		"defaults": {nil, "dualstack_webhook_pools_stale", "10m"},
		"renamed metric and a shorter wait": {
			[]string{"prometheusRule.metrics.poolsStale=my_pools_stale", "prometheusRule.poolsStaleFor=3m"}, "my_pools_stale", "3m"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, "", append([]string{"prometheusRule.enabled=true"}, tc.set...)...)
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, u := range decode(t, out).unknown {
				if u.GetKind() != "PrometheusRule" {
					continue
				}
				groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
				for _, g := range groups {
					rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
					for _, r := range rules {
						rule := r.(map[string]any)
						if rule["alert"] != "DualStackWebhookPoolsNotApplied" {
							continue
						}
						found = true
						expr, _ := rule["expr"].(string)
						if !strings.Contains(expr, tc.metric+`{namespace="`+namespace+`"}`) || !strings.Contains(expr, "== 1") {
							t.Errorf("expr %q: want %s of the release namespace == 1", expr, tc.metric)
						}
						if rule["for"] != tc.wait {
							t.Errorf("for %v, want %s", rule["for"], tc.wait)
						}
						ann, _ := rule["annotations"].(map[string]any)
						if d, _ := ann["description"].(string); !strings.Contains(d, "PoolsNotApplied") || !strings.Contains(d, "docs/allocator.md") {
							t.Errorf("description %q does not point to the Event and the docs", d)
						}
					}
				}
			}
			if !found {
				t.Fatal("no DualStackWebhookPoolsNotApplied alert")
			}
		})
	}
}

// TestSkipLabelledServicesReachValidation: by default the validating
// webhook has no objectSelector (it checks the addresses skip-labelled
// Services ask for) while the mutating ones keep the skip label's;
// webhook.validating.checkSkipLabelled=false gives the validating webhook
// the skip label's objectSelector back.
func TestSkipLabelledServicesReachValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		set  []string
		want bool // the validating webhook excludes skip-labelled Services
	}{
		"default":                 {nil, false},
		"checkSkipLabelled=false": {[]string{"webhook.validating.checkSkipLabelled=false"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, "", tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			r := decode(t, out)
			for _, w := range one[*admissionregistrationv1.ValidatingWebhookConfiguration](t, r).Webhooks {
				if w.Name != "validating.dualstack-webhook.io" {
					continue
				}
				excluded := w.ObjectSelector != nil && strings.Contains(w.ObjectSelector.String(), "dualstack-webhook.io/skip")
				if excluded != tc.want {
					t.Errorf("validating objectSelector %v: excludes skip-labelled Services %v, want %v", w.ObjectSelector, excluded, tc.want)
				}
			}
			for _, w := range one[*admissionregistrationv1.MutatingWebhookConfiguration](t, r).Webhooks {
				if w.ObjectSelector == nil || !strings.Contains(w.ObjectSelector.String(), "dualstack-webhook.io/skip") {
					t.Errorf("%s: objectSelector %v, want the skip label's", w.Name, w.ObjectSelector)
				}
			}
		})
	}
}
