// Package admissionpolicy renders the webhook's configurable ipFamilyPolicy
// default as a MutatingAdmissionPolicy and its binding
// (admissionregistration.k8s.io/v1, Kubernetes ≥ 1.36): the same default as
// the webhook's /default, applied by the apiserver itself with CEL, so that
// defaulting needs no webhook Pod at all.
//
// What the policy does, and why it matches the webhook's engine:
//
//   - CREATE only, v1 Services, never ExternalName, never a Service that
//     chose its own ipFamilyPolicy, never a selectorless headless Service
//     (the apiserver always makes those RequireDualStack), never
//     default/kubernetes; the skip label on the Service or its Namespace
//     (any value but "false") leaves the Service alone.
//   - The default is the Namespace annotation when it holds one of the three
//     policies, else the rendered --default-ip-family-policy (an invalid
//     annotation is ignored, as by the webhook, which also warns).
//   - RequireDualStack is dropped on a single-stack cluster
//     (policy.EffectiveDefault): the cluster's families come from the default
//     ServiceCIDR "kubernetes", the param of the binding, exactly where the
//     webhook reads them.
//   - Only spec.ipFamilyPolicy is written (one JSONPatch "add"): given the
//     policy, the apiserver derives the same ipFamilies the webhook would
//     write, so the stored Service is the same. ipFamilies is an atomic list
//     that an ApplyConfiguration could not set anyway.
//
// What it cannot do: pin clusterIPs (state), translate the legacy
// spec.ipFamily (the apiserver drops unknown fields before admission) or
// warn (a MutatingAdmissionPolicy has no warnings).
//
// The package only builds objects; the render-policy command prints them.
package admissionpolicy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// DefaultName names the policy and its binding unless Options.Name is set.
const DefaultName = "dualstack-webhook-defaulting"

// defaultServiceCIDR is the ServiceCIDR the apiserver keeps from its
// --service-cluster-ip-range flag, primary family first.
const defaultServiceCIDR = "kubernetes"

// Options shape the rendered objects.
type Options struct {
	// Name of the policy and of the binding (DefaultName when empty).
	Name string
	// DefaultPolicy is --default-ip-family-policy; nil keeps the apiserver's
	// default unless a Namespace annotation says otherwise.
	DefaultPolicy *corev1.IPFamilyPolicy
	// ExcludeNamespaces are never matched (the chart's kube-system and
	// release namespace, plus webhook.excludeNamespaces).
	ExcludeNamespaces []string
	// NamespaceSelectorExpressions are ANDed into the namespaceSelector
	// (the chart's webhook.namespaceSelectorExpressions).
	NamespaceSelectorExpressions []metav1.LabelSelectorRequirement
	// Labels are put on both objects.
	Labels map[string]string
}

// The CEL expressions, named so that tests can break one at a time. %s in
// annotationDefault is replaced by the rendered flag default ("" for none).
const (
	celNotDefaultKubernetes = "!(request.namespace == 'default' && request.name == 'kubernetes')"
	celServiceNotSkipped    = "!has(object.metadata.labels) || !('" + policy.SkipLabel + "' in object.metadata.labels) || object.metadata.labels['" + policy.SkipLabel + "'] == 'false'"
	celPolicyUnset          = "!has(object.spec.ipFamilyPolicy)"
	celNotExternalName      = "!has(object.spec.type) || object.spec.type != 'ExternalName'"
	celNotSelectorless      = "!(has(object.spec.clusterIP) && object.spec.clusterIP == 'None' && (!has(object.spec.selector) || size(object.spec.selector) == 0))"

	// namespaceObject is null in matchConditions (they run before the
	// Namespace is looked up), so the Namespace's label is a variable.
	celNamespaceSkipped = "namespaceObject != null && has(namespaceObject.metadata.labels) && '" + policy.SkipLabel + "' in namespaceObject.metadata.labels && namespaceObject.metadata.labels['" + policy.SkipLabel + "'] != 'false'"
	celAnnotation       = "namespaceObject != null && has(namespaceObject.metadata.annotations) && '" + policy.NamespacePolicyAnnotation + "' in namespaceObject.metadata.annotations ? namespaceObject.metadata.annotations['" + policy.NamespacePolicyAnnotation + "'] : ''"
	celWanted           = "variables.annotation in ['SingleStack', 'PreferDualStack', 'RequireDualStack'] ? variables.annotation : '%s'"
	celDualStackCluster = "params != null && has(params.spec.cidrs) && size(params.spec.cidrs) == 2"
	celPolicy           = "variables.namespaceSkipped || (variables.wanted == 'RequireDualStack' && !variables.dualStackCluster) ? '' : variables.wanted"
	celPatch            = "variables.policy == '' ? [] : [JSONPatch{op: 'add', path: '/spec/ipFamilyPolicy', value: variables.policy}]"
)

// Render builds the policy and its binding.
func Render(o Options) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding, error) {
	name := o.Name
	if name == "" {
		name = DefaultName
	}
	def := ""
	if o.DefaultPolicy != nil {
		switch p := *o.DefaultPolicy; p {
		case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack:
			def = string(p)
		default:
			return nil, nil, fmt.Errorf("default ipFamilyPolicy %q: want SingleStack, PreferDualStack or RequireDualStack", p)
		}
	}
	for _, n := range o.ExcludeNamespaces {
		if n == "" {
			return nil, nil, fmt.Errorf("exclude namespaces: empty name")
		}
	}
	exclude := dedupe(slices.Clone(o.ExcludeNamespaces))

	// Like the chart's webhook registrations: excluded namespaces and the
	// skip label value "true" are filtered before any CEL runs; the other
	// skip values are the matchConditions' business.
	nsSel := &metav1.LabelSelector{}
	if len(exclude) > 0 {
		nsSel.MatchExpressions = append(nsSel.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: exclude})
	}
	nsSel.MatchExpressions = append(nsSel.MatchExpressions, metav1.LabelSelectorRequirement{
		Key: policy.SkipLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}})
	nsSel.MatchExpressions = append(nsSel.MatchExpressions, o.NamespaceSelectorExpressions...)
	objSel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: policy.SkipLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}}}

	ignore := admissionregistrationv1.Ignore
	equivalent := admissionregistrationv1.Equivalent
	namespaced := admissionregistrationv1.NamespacedScope
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: o.Labels},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			ParamKind: &admissionregistrationv1.ParamKind{APIVersion: "networking.k8s.io/v1", Kind: "ServiceCIDR"},
			MatchConstraints: &admissionregistrationv1.MatchResources{
				NamespaceSelector: nsSel,
				ObjectSelector:    objSel,
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}, Scope: &namespaced,
						},
					},
				}},
				MatchPolicy: &equivalent,
			},
			MatchConditions: []admissionregistrationv1.MatchCondition{
				{Name: "not-default-kubernetes", Expression: celNotDefaultKubernetes},
				{Name: "service-not-skipped", Expression: celServiceNotSkipped},
				{Name: "policy-unset", Expression: celPolicyUnset},
				{Name: "not-externalname", Expression: celNotExternalName},
				{Name: "not-selectorless-headless", Expression: celNotSelectorless},
			},
			Variables: []admissionregistrationv1.Variable{
				{Name: "namespaceSkipped", Expression: celNamespaceSkipped},
				{Name: "annotation", Expression: celAnnotation},
				{Name: "wanted", Expression: fmt.Sprintf(celWanted, def)},
				{Name: "dualStackCluster", Expression: celDualStackCluster},
				{Name: "policy", Expression: celPolicy},
			},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: celPatch},
			}},
			// Fail-open like the defaulting webhook: a broken policy or a
			// missing ServiceCIDR only loses the default.
			FailurePolicy: &ignore,
			// Once written, policy-unset no longer matches: a re-run after a
			// later mutation (the pinning webhook) is a no-op, and a later
			// mutation that removed the field gets the default again.
			ReinvocationPolicy: admissionregistrationv1.IfNeededReinvocationPolicy,
		},
	}
	allow := admissionregistrationv1.AllowAction
	b := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: o.Labels},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: name,
			// Without the default ServiceCIDR (clusters before 1.33) params
			// is null: dualStackCluster is false, so a RequireDualStack
			// default is not applied rather than risking rejections.
			ParamRef: &admissionregistrationv1.ParamRef{Name: defaultServiceCIDR, ParameterNotFoundAction: &allow},
		},
	}
	return p, b, nil
}

// dedupe drops repeated names, keeping the first (the chart's uniq).
func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// YAML renders both objects as one YAML stream, policy first.
func YAML(o Options) ([]byte, error) {
	p, b, err := Render(o)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	header := "# dualstack-webhook ipFamilyPolicy defaulting without a webhook (Kubernetes >= 1.36).\n"
	if o.DefaultPolicy != nil {
		header += "# --default-ip-family-policy=" + string(*o.DefaultPolicy) + "; Namespace annotation " + policy.NamespacePolicyAnnotation + " overrides it.\n"
	} else {
		header += "# No --default-ip-family-policy: only Namespaces annotated " + policy.NamespacePolicyAnnotation + " get a default.\n"
	}
	buf.WriteString(header)
	for i, obj := range []any{p, b} {
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		// creationTimestamp: null is noise for kubectl apply.
		buf.WriteString(strings.ReplaceAll(string(y), "  creationTimestamp: null\n", ""))
	}
	return buf.Bytes(), nil
}
