package framework

import (
	"context"
	"fmt"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Labels and annotations of the suites (the dualstack-webhook.io/ ones are contract).
const (
	// ScopeLabel selects the namespaces one registered test webhook serves;
	// its value names the instance.
	ScopeLabel = "dualstack-webhook.io/e2e"
	// SkipLabel: the webhook leaves a Service (or a Namespace's Services) alone.
	SkipLabel = "dualstack-webhook.io/skip"
	// PolicyAnnotation on a Namespace: default ipFamilyPolicy of its Services.
	PolicyAnnotation = "dualstack-webhook.io/ip-family-policy"
)

// Registration describes the two webhook configurations of one instance.
type Registration struct {
	// Name is the instance name: the configurations are named
	// dualstack-webhook-e2e-<Name>, the webhooks <kind>.<Name>.e2e.dualstack-webhook.io,
	// and they serve namespaces labelled ScopeLabel=<Name>.
	Name string
	// URL is the webhook's base URL (https://127.0.0.1:port).
	URL string
	// CABundle is the PEM CA of its serving certificate.
	CABundle []byte
	// TimeoutSeconds of each call (default 10).
	TimeoutSeconds int32
	// NamespaceSelector replaces the default ScopeLabel=<Name> selector, e.g.
	// to register the webhook the way the chart does (every namespace but a
	// few, honouring the skip label).
	NamespaceSelector *metav1.LabelSelector
	// ObjectSelector, when set, is added to both webhooks.
	ObjectSelector *metav1.LabelSelector
	// MutatingObjectSelector, when set, is added to the mutating webhook
	// only (the chart keeps skip-labelled Services from its mutating
	// webhooks but sends them to the validating one).
	MutatingObjectSelector *metav1.LabelSelector
}

// ConfigName is the name of both configuration objects.
func (r Registration) ConfigName() string { return "dualstack-webhook-e2e-" + r.Name }

// MutatingName is the name the apiserver quotes when the mutating webhook denies.
func (r Registration) MutatingName() string { return "mutate." + r.Name + ".e2e.dualstack-webhook.io" }

// ValidatingName is the name the apiserver quotes when the validating webhook denies.
func (r Registration) ValidatingName() string {
	return "validate." + r.Name + ".e2e.dualstack-webhook.io"
}

func (r Registration) common(path string) (admissionregistrationv1.WebhookClientConfig, []admissionregistrationv1.RuleWithOperations, *metav1.LabelSelector) {
	url := strings.TrimSuffix(r.URL, "/") + path
	cc := admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: r.CABundle}
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule: admissionregistrationv1.Rule{
			APIGroups:   []string{""},
			APIVersions: []string{"v1"},
			Resources:   []string{"services"},
			Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
		},
	}}
	// Only labelled test namespaces: failurePolicy Fail must never block the
	// apiserver's own objects (default/kubernetes) or other suites.
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{ScopeLabel: r.Name}}
	if r.NamespaceSelector != nil {
		sel = r.NamespaceSelector
	}
	return cc, rules, sel
}

// Register creates (or replaces) the MutatingWebhookConfiguration (/mutate) and
// ValidatingWebhookConfiguration (/validate) of the instance. The validating
// one is created first so that, once the mutating one is seen to be effective
// (WaitEffective), the validating one has had at least as long to load.
func Register(ctx context.Context, c kubernetes.Interface, r Registration) error {
	if r.TimeoutSeconds == 0 {
		r.TimeoutSeconds = 10
	}
	sideEffects := admissionregistrationv1.SideEffectClassNoneOnDryRun
	fail := admissionregistrationv1.Fail
	equivalent := admissionregistrationv1.Equivalent

	vcc, rules, sel := r.common("/validate")
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: r.ConfigName()},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    r.ValidatingName(),
			ClientConfig:            vcc,
			Rules:                   rules,
			NamespaceSelector:       sel,
			ObjectSelector:          r.ObjectSelector,
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &sideEffects,
			TimeoutSeconds:          &r.TimeoutSeconds,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	mcc, rules, sel := r.common("/mutate")
	mobj := r.ObjectSelector
	if r.MutatingObjectSelector != nil {
		mobj = r.MutatingObjectSelector
	}
	reinvoke := admissionregistrationv1.IfNeededReinvocationPolicy
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: r.ConfigName()},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    r.MutatingName(),
			ClientConfig:            mcc,
			Rules:                   rules,
			NamespaceSelector:       sel,
			ObjectSelector:          mobj,
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &sideEffects,
			TimeoutSeconds:          &r.TimeoutSeconds,
			ReinvocationPolicy:      &reinvoke,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if err := Unregister(ctx, c, r); err != nil {
		return err
	}
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, vwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ValidatingWebhookConfiguration: %w", err)
	}
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create MutatingWebhookConfiguration: %w", err)
	}
	return nil
}

// Unregister deletes both configurations of the instance (absent is fine).
func Unregister(ctx context.Context, c kubernetes.Interface, r Registration) error {
	err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, r.ConfigName(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, r.ConfigName(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// SkipLabelSelector is the chart's objectSelector of its mutating Service
// webhooks: Services not labelled SkipLabel=true.
func SkipLabelSelector() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: SkipLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}}}
}

// ChartLikeSelectors are the selectors the chart registers its Service
// webhooks with: every namespace except the listed ones, and neither a
// Namespace nor (objectSelector) a Service labelled SkipLabel=true. The
// chart puts the objectSelector on its mutating webhooks only
// (Registration.MutatingObjectSelector): the validating one still checks
// the addresses skip-labelled Services ask for.
func ChartLikeSelectors(excludeNamespaces ...string) (namespaceSelector, objectSelector *metav1.LabelSelector) {
	skip := metav1.LabelSelectorRequirement{Key: SkipLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}
	namespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: excludeNamespaces},
		skip,
	}}
	return namespaceSelector, SkipLabelSelector()
}

// ProbeService is a Service the apiserver itself rejects (SingleStack with two
// families), so whoever answers first for it is visible in the message: the
// webhook when registered ("admission webhook ... denied"), the apiserver's
// validation otherwise.
func ProbeService() *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-registration-probe"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "probe"},
			Ports:          []corev1.ServicePort{{Port: 80}},
			IPFamilyPolicy: &single,
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
		},
	}
}

// WaitEffective polls with a dry-run create of ProbeService in namespace until
// the denial comes from a webhook whose name contains webhookName (any
// admission webhook when empty, for clusters where the chart named them). The
// apiserver loads configurations asynchronously, so without this the first
// requests of a suite could bypass the webhook.
func WaitEffective(ctx context.Context, c kubernetes.Interface, namespace, webhookName string, timeout time.Duration) error {
	want := `admission webhook "`
	if webhookName != "" {
		want += webhookName
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Services(namespace).Create(ctx, ProbeService(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			// Neither the webhook nor the apiserver denied a SingleStack
			// Service with two families: something is badly wrong.
			return false, fmt.Errorf("probe Service (SingleStack with two families) was admitted in %s", namespace)
		}
		last = err.Error()
		return strings.Contains(last, want), nil
	})
	if err != nil {
		return fmt.Errorf("webhook %q not effective in namespace %s: %w (last answer: %s)", webhookName, namespace, err, last)
	}
	return nil
}
