package admissionpolicy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func TestRenderDefaults(t *testing.T) {
	for _, tc := range []struct {
		def  string
		want string // the literal the "wanted" variable falls back to
	}{
		{"", "''"},
		{"SingleStack", "'SingleStack'"},
		{"PreferDualStack", "'PreferDualStack'"},
		{"RequireDualStack", "'RequireDualStack'"},
	} {
		t.Run("default="+tc.def, func(t *testing.T) {
			o := Options{}
			if tc.def != "" {
				p := corev1.IPFamilyPolicy(tc.def)
				o.DefaultPolicy = &p
			}
			p, b, err := Render(o)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != DefaultName || b.Name != DefaultName || b.Spec.PolicyName != p.Name {
				t.Errorf("names: policy %q binding %q -> %q", p.Name, b.Name, b.Spec.PolicyName)
			}
			var wanted string
			for _, v := range p.Spec.Variables {
				if v.Name == "wanted" {
					wanted = v.Expression
				}
			}
			if !strings.HasSuffix(wanted, ": "+tc.want) {
				t.Errorf("wanted = %q, want the fallback %s", wanted, tc.want)
			}
			rr := p.Spec.MatchConstraints.ResourceRules
			if len(rr) != 1 || len(rr[0].Operations) != 1 || rr[0].Operations[0] != "CREATE" || rr[0].Resources[0] != "services" {
				t.Errorf("rules %+v: want CREATE of services only", rr)
			}
			if *p.Spec.FailurePolicy != "Ignore" || p.Spec.ReinvocationPolicy != "IfNeeded" {
				t.Errorf("failurePolicy %s reinvocation %s", *p.Spec.FailurePolicy, p.Spec.ReinvocationPolicy)
			}
			if b.Spec.ParamRef == nil || b.Spec.ParamRef.Name != "kubernetes" || p.Spec.ParamKind.Kind != "ServiceCIDR" {
				t.Errorf("param: kind %+v ref %+v", p.Spec.ParamKind, b.Spec.ParamRef)
			}
		})
	}
}

func TestRenderRejectsBadInput(t *testing.T) {
	bad := corev1.IPFamilyPolicy("DualStack")
	if _, _, err := Render(Options{DefaultPolicy: &bad}); err == nil || !strings.Contains(err.Error(), `"DualStack"`) {
		t.Errorf("bad policy: %v", err)
	}
	if _, _, err := Render(Options{ExcludeNamespaces: []string{"a", ""}}); err == nil {
		t.Error("empty namespace name accepted")
	}
}

func TestRenderSelectors(t *testing.T) {
	extra := metav1.LabelSelectorRequirement{Key: "team", Operator: metav1.LabelSelectorOpExists}
	p, _, err := Render(Options{Name: "x", ExcludeNamespaces: []string{"kube-system", "ops", "kube-system"}, NamespaceSelectorExpressions: []metav1.LabelSelectorRequirement{extra}})
	if err != nil {
		t.Fatal(err)
	}
	exprs := p.Spec.MatchConstraints.NamespaceSelector.MatchExpressions
	if len(exprs) != 3 || strings.Join(exprs[0].Values, ",") != "kube-system,ops" || exprs[1].Key != "dualstack-webhook.io/skip" || exprs[2].Key != "team" {
		t.Errorf("namespaceSelector %+v", exprs)
	}
}

func TestYAMLIsTwoDocuments(t *testing.T) {
	out, err := YAML(Options{})
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 documents, got %d", len(docs))
	}
	for i, kind := range []string{"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"} {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(docs[i]), &m); err != nil {
			t.Fatal(err)
		}
		if m["kind"] != kind || m["apiVersion"] != "admissionregistration.k8s.io/v1" {
			t.Errorf("document %d: %v %v", i, m["apiVersion"], m["kind"])
		}
	}
	if strings.Contains(string(out), "creationTimestamp") {
		t.Error("creationTimestamp left in the output")
	}
}
