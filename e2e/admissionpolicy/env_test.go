package admissionpolicy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/grid"
	"github.com/dualstack-webhook/dualstack-webhook/policy/admissionpolicy"
)

// The configured defaults of the proof: none and the three policies.
var flagDefaults = []string{"", "SingleStack", "PreferDualStack", "RequireDualStack"}

// config is one way a default reaches a Service: the flag (rendered into the
// policy, passed to the webhook) and the Namespace annotation.
type config struct {
	name       string
	flag       string
	annotation string
}

var configs = []config{
	{"flag=none", "", ""},
	{"flag=SingleStack", "SingleStack", ""},
	{"flag=PreferDualStack", "PreferDualStack", ""},
	{"flag=RequireDualStack", "RequireDualStack", ""},
	{"annotation=SingleStack", "", "SingleStack"},
	{"annotation=PreferDualStack", "", "PreferDualStack"},
	{"annotation=RequireDualStack", "", "RequireDualStack"},
	{"flag=RequireDualStack/annotation=SingleStack", "RequireDualStack", "SingleStack"},
	// Ignored by both (the webhook also warns): the flag's default applies.
	{"flag=PreferDualStack/annotation=invalid", "PreferDualStack", "Bogus"},
}

func slug(flag string) string {
	if flag == "" {
		return "none"
	}
	return strings.ToLower(flag)
}

// Scopes: the policy of flag f serves namespaces labelled ScopeLabel=map-<f>,
// the webhook of flag f those labelled ScopeLabel=wh-<f>.
func policyScope(flag string) string  { return "map-" + slug(flag) }
func webhookScope(flag string) string { return "wh-" + slug(flag) }

// shape is one control plane of a grid cluster shape with a /default webhook
// process and a rendered policy per configured default.
type shape struct {
	cluster grid.Cluster
	env     *framework.Env
	c       kubernetes.Interface
	// policyNS and webhookNS name the namespace of each config per path.
	policyNS, webhookNS map[string]string
}

func startShape(t *testing.T, ctx context.Context, cl grid.Cluster) *shape {
	t.Helper()
	env, err := framework.NewLocalEnv(ctx, "admissionpolicy-"+cl.Name, framework.ControlPlaneOptions{ServiceCIDRs: cl.CIDRs})
	if err != nil {
		t.Fatalf("cluster %s: %v", cl.Name, err)
	}
	t.Cleanup(func() {
		if err := env.Close(t.Failed()); err != nil {
			t.Errorf("stop cluster %s: %v", cl.Name, err)
		}
	})
	s := &shape{cluster: cl, env: env, c: quietClient(t, env), policyNS: map[string]string{}, webhookNS: map[string]string{}}
	bin, err := framework.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range flagDefaults {
		// The webhook learns the families from the ServiceCIDR "kubernetes"
		// (no --service-cidrs), as the policy does through its param.
		w, err := framework.StartWebhook(ctx, framework.WebhookOptions{
			Binary: bin, Name: webhookScope(flag), Dir: env.Artifacts, Kubeconfig: env.Kubeconfig,
			DefaultIPFamilyPolicy: flag, ExtraArgs: []string{"--pinning=false", "--shutdown-delay=0s"},
		})
		if err != nil {
			t.Fatalf("webhook %s: %v", flag, err)
		}
		t.Cleanup(func() {
			if err := w.Stop(); err != nil {
				t.Errorf("webhook %s: %v", flag, err)
			}
		})
		if err := registerDefault(ctx, s.c, webhookScope(flag), w); err != nil {
			t.Fatal(err)
		}
		p, b := renderFor(t, flag, policyScope(flag))
		if err := installPolicy(ctx, s.c, p, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, cfg := range configs {
		var ann map[string]string
		if cfg.annotation != "" {
			ann = map[string]string{framework.PolicyAnnotation: cfg.annotation}
		}
		s.policyNS[cfg.name] = s.namespace(t, ctx, policyScope(cfg.flag), policyScope(cfg.flag), nil, ann)
		s.webhookNS[cfg.name] = s.namespace(t, ctx, webhookScope(cfg.flag), webhookScope(cfg.flag), nil, ann)
	}
	// Both kinds of configuration load asynchronously: wait until each
	// answers for a probe namespace whose annotation makes it visible.
	prefer := map[string]string{framework.PolicyAnnotation: "PreferDualStack"}
	for _, flag := range flagDefaults {
		for _, scope := range []string{policyScope(flag), webhookScope(flag)} {
			ns := s.namespace(t, ctx, "probe-"+scope, scope, nil, prefer)
			s.waitFor(t, ctx, ns, scope, func(o framework.Outcome) bool { return o.IPFamilyPolicy == "PreferDualStack" })
		}
	}
	return s
}

// quietClient is env's client without client-go's warning log: the
// webhook warns on each of the hundreds of creates in a Namespace with an
// invalid annotation, which would bury the test output.
func quietClient(t testing.TB, env *framework.Env) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = rest.NoWarnings{}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renderFor renders the policy of a configured default, bound to one scope.
func renderFor(t testing.TB, flag, scope string) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	t.Helper()
	o := admissionpolicy.Options{
		Name: "dsw-" + scope,
		NamespaceSelectorExpressions: []metav1.LabelSelectorRequirement{{
			Key: framework.ScopeLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{scope}}},
	}
	if flag != "" {
		p := corev1.IPFamilyPolicy(flag)
		o.DefaultPolicy = &p
	}
	p, b, err := admissionpolicy.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

func installPolicy(ctx context.Context, c kubernetes.Interface, p *admissionregistrationv1.MutatingAdmissionPolicy, b *admissionregistrationv1.MutatingAdmissionPolicyBinding) error {
	if _, err := c.AdmissionregistrationV1().MutatingAdmissionPolicies().Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create MutatingAdmissionPolicy %s: %w", p.Name, err)
	}
	if _, err := c.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create MutatingAdmissionPolicyBinding %s: %w", b.Name, err)
	}
	return nil
}

// registerDefault registers the webhook's /default the way the chart does
// for its defaulting webhook (CREATE and UPDATE, sideEffects None,
// reinvocation IfNeeded), but failing closed so that a webhook error cannot
// pass for "no default", for the namespaces of one scope.
func registerDefault(ctx context.Context, c kubernetes.Interface, scope string, w *framework.Webhook) error {
	url := w.URL + "/default"
	none := admissionregistrationv1.SideEffectClassNone
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "dsw-" + scope},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "default." + scope + ".e2e.dualstack-webhook.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: w.CABundle},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"},
					Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{framework.ScopeLabel: scope}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			SideEffects:             &none,
			TimeoutSeconds:          ptr.To[int32](10),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("register webhook %s: %w", scope, err)
	}
	return nil
}

// namespace creates a namespace served by scope (prefix names it).
func (s *shape) namespace(t testing.TB, ctx context.Context, prefix, scope string, labels, ann map[string]string) string {
	t.Helper()
	l := map[string]string{framework.ScopeLabel: scope}
	for k, v := range labels {
		l[k] = v
	}
	ns, err := framework.Namespace(ctx, s.c, prefix, l, ann)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// plainService is a ClusterIP Service with a selector and nothing dual-stack
// set: the one every default applies to.
func plainService(name string) *corev1.Service {
	sv := grid.Input{Selector: true}.Service()
	sv.Name = name
	return sv
}

// dryRun creates sv in ns as a server-side dry run and reduces the answer.
func (s *shape) dryRun(ctx context.Context, ns string, sv *corev1.Service) framework.Outcome {
	got, err := s.c.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return framework.OutcomeOf(got, err)
}

// waitFor polls a dry-run create of a plain Service in ns until ok holds.
func (s *shape) waitFor(t testing.TB, ctx context.Context, ns, what string, ok func(framework.Outcome) bool) {
	t.Helper()
	var last framework.Outcome
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		o := s.dryRun(ctx, ns, plainService("probe"))
		if o.Error != nil && o.Error.Code == 0 {
			return false, fmt.Errorf("%s", o.Error.Message)
		}
		last = o
		return ok(o), nil
	})
	if err != nil {
		msg := ""
		if last.Error != nil {
			msg = last.Error.Message
		}
		t.Fatalf("%s not effective in %s on cluster %s: %v (last: %+v %s)", what, ns, s.cluster.Name, err, last, msg)
	}
}

// ignoreNotFound is for cleanups of objects that may not exist.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
