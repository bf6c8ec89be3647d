package charts

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/policy/admissionpolicy"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPolicyModeRendersRenderPolicy: with defaulting.mode=policy the chart
// renders the very objects `dualstack-webhook render-policy` prints for the
// same settings (the template is hand-written YAML; this keeps the two from
// drifting), for every configured default.
func TestPolicyModeRendersRenderPolicy(t *testing.T) {
	tenant := metav1.LabelSelectorRequirement{Key: "dualstack-webhook.io/tenant", Operator: metav1.LabelSelectorOpExists}
	for _, tc := range []struct {
		name, values string
		def          string
		exclude      []string
		extra        []metav1.LabelSelectorRequirement
	}{
		{"values/policy.yaml", filepath.Join("testdata", "values", "policy.yaml"), "PreferDualStack", []string{"kube-system", namespace, "monitoring"}, []metav1.LabelSelectorRequirement{tenant}},
		{"default none", "", "", []string{"kube-system", namespace}, nil},
		{"default SingleStack", "", "SingleStack", []string{"kube-system", namespace}, nil},
		{"default RequireDualStack", "", "RequireDualStack", []string{"kube-system", namespace}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := []string{"defaulting.mode=policy"}
			if tc.values == "" {
				set = append(set, "config.defaultIPFamilyPolicy="+tc.def)
			}
			out, err := render(t, tc.values, set...)
			if err != nil {
				t.Fatal(err)
			}
			r := decode(t, out)
			p := one[*admissionregistrationv1.MutatingAdmissionPolicy](t, r)
			b := one[*admissionregistrationv1.MutatingAdmissionPolicyBinding](t, r)
			o := admissionpolicy.Options{Name: release + "-dualstack-webhook-defaulting", ExcludeNamespaces: tc.exclude, NamespaceSelectorExpressions: tc.extra}
			if tc.def != "" {
				d := corev1.IPFamilyPolicy(tc.def)
				o.DefaultPolicy = &d
			}
			wp, wb, err := admissionpolicy.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != wp.Name || b.Name != wb.Name {
				t.Errorf("names %s/%s, render-policy %s/%s", p.Name, b.Name, wp.Name, wb.Name)
			}
			if !equality.Semantic.DeepEqual(p.Spec, wp.Spec) {
				t.Errorf("MutatingAdmissionPolicy spec differs from render-policy's:\nchart:  %+v\nrender: %+v", p.Spec, wp.Spec)
			}
			if !equality.Semantic.DeepEqual(b.Spec, wb.Spec) {
				t.Errorf("binding spec differs from render-policy's:\nchart:  %+v\nrender: %+v", b.Spec, wb.Spec)
			}
			if p.Labels["app.kubernetes.io/instance"] != release {
				t.Errorf("policy labels %v", p.Labels)
			}
		})
	}
}

func TestPolicyModeOnly(t *testing.T) {
	// Webhook mode (the default): no policy.
	out, err := render(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := decode(t, out); len(find[*admissionregistrationv1.MutatingAdmissionPolicy](r)) != 0 {
		t.Error("defaulting.mode=webhook renders a MutatingAdmissionPolicy")
	}
	// Policy mode without pinning: no mutating webhook left at all, the
	// validating one stays.
	out, err = render(t, "", "defaulting.mode=policy", "webhook.pinning.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	r := decode(t, out)
	if n := len(find[*admissionregistrationv1.MutatingWebhookConfiguration](r)); n != 0 {
		t.Errorf("%d MutatingWebhookConfigurations without defaulting webhook and pinning", n)
	}
	one[*admissionregistrationv1.ValidatingWebhookConfiguration](t, r)
	one[*admissionregistrationv1.MutatingAdmissionPolicy](t, r)
}

func TestPolicyModeRefusesOldKubernetes(t *testing.T) {
	_, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--kube-version", "1.35.4", "--set", "defaulting.mode=policy")
	if err == nil || !strings.Contains(err.Error(), "needs Kubernetes >= 1.36") {
		t.Errorf("mode=policy on 1.35: %v", err)
	}
	if _, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--kube-version", "1.35.4"); err != nil {
		t.Errorf("mode=webhook on 1.35 must render: %v", err)
	}
	if _, err := render(t, "", "defaulting.mode=both"); err == nil {
		t.Error("defaulting.mode=both accepted by the schema")
	}
}
