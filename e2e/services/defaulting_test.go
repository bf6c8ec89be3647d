package services

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestDefaultPolicy checks the two ways the webhook goes beyond the apiserver
// — the --default-ip-family-policy flag and the Namespace annotation — and
// that the skip label (on the Service or its Namespace) and an explicit
// policy win over them.
func TestDefaultPolicy(t *testing.T) {
	fams := clusterFamilies(t)
	needDualStack(t)
	primary, secondary := fams[0], fams[1]
	single := want{corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{primary}}
	preferDualWant := want{corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{primary, secondary}}
	requireDualWant := want{corev1.IPFamilyPolicyRequireDualStack, []corev1.IPFamily{primary, secondary}}
	skip := func(s *corev1.Service) { s.Labels[framework.SkipLabel] = "true" }
	annotated := func(p string) map[string]string { return map[string]string{framework.PolicyAnnotation: p} }

	tests := []struct {
		name        string
		kind        nsKind
		nsLabels    map[string]string
		annotations map[string]string
		svc         *corev1.Service
		want        want
	}{
		{name: "flag PreferDualStack: plain Service becomes dual", kind: preferDual,
			svc: svc("plain"), want: preferDualWant},
		{name: "flag PreferDualStack: explicit SingleStack wins", kind: preferDual,
			svc: svc("explicit", framework.WithPolicy(corev1.IPFamilyPolicySingleStack)), want: single},
		{name: "flag PreferDualStack: explicit ipFamilies keep their order", kind: preferDual,
			svc:  svc("v6first", framework.WithFamilies(secondary)),
			want: want{corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{secondary, primary}}},
		{name: "flag PreferDualStack: skip label on the Service", kind: preferDual,
			svc: svc("skipped", skip), want: single},
		{name: "flag PreferDualStack: skip label on the Namespace", kind: preferDual,
			nsLabels: map[string]string{framework.SkipLabel: "true"}, svc: svc("ns-skipped"), want: single},
		{name: "annotation PreferDualStack: plain Service becomes dual", kind: withWebhook,
			annotations: annotated("PreferDualStack"), svc: svc("plain"), want: preferDualWant},
		{name: "annotation RequireDualStack", kind: withWebhook,
			annotations: annotated("RequireDualStack"), svc: svc("plain"), want: requireDualWant},
		{name: "annotation PreferDualStack: explicit SingleStack wins", kind: withWebhook,
			annotations: annotated("PreferDualStack"), svc: svc("explicit", framework.WithPolicy(corev1.IPFamilyPolicySingleStack)), want: single},
		{name: "annotation PreferDualStack: skip label on the Service", kind: withWebhook,
			annotations: annotated("PreferDualStack"), svc: svc("skipped", skip), want: single},
		{name: "annotation PreferDualStack: skip label on the Namespace", kind: withWebhook,
			nsLabels: map[string]string{framework.SkipLabel: "true"}, annotations: annotated("PreferDualStack"),
			svc: svc("ns-skipped"), want: single},
		{name: "annotation overrides the flag", kind: preferDual,
			annotations: annotated("SingleStack"), svc: svc("plain"), want: single},
		{name: "no flag, no annotation: apiserver default", kind: withWebhook,
			svc: svc("plain"), want: single},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNamespace(t, tt.kind, "defaulting", tt.nsLabels, tt.annotations)
			mustCreate(t, ns, tt.svc)
			checkShape(t, get(t, ns, tt.svc.Name), tt.want)
		})
	}
}
