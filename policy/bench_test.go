package policy

import "testing"

// BenchmarkEvaluate: the engine's share of a review. Figures are only
// compared within one run (the legacy object needs the second, raw pass).
func BenchmarkEvaluate(b *testing.B) {
	for name, s := range map[string]spec{
		"plain":  {"selector": map[string]any{"app": "x"}},
		"legacy": {"selector": map[string]any{"app": "x"}, "ipFamily": "IPv6", "type": "LoadBalancer"},
		"dual":   {"selector": map[string]any{"app": "x"}, "ipFamilyPolicy": "PreferDualStack", "ipFamilies": []string{"IPv6"}},
	} {
		obj := svcJSON(b, "svc", s)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Evaluate(Input{Families: clusterV4V6, Operation: Create, Object: obj}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
