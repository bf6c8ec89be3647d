package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzEvaluate: no input may panic the engine, and a successful CREATE
// decision must be a fixed point (re-invocation of the webhook on its own
// output changes nothing).
func FuzzEvaluate(f *testing.F) {
	seeds := []string{
		`{"spec":{}}`,
		`{"spec":{"clusterIP":"None"}}`,
		`{"spec":{"ipFamily":"IPv6","type":"LoadBalancer"}}`,
		`{"spec":{"ipFamilyPolicy":"PreferDualStack","ipFamilies":["IPv6"]}}`,
		`{"spec":{"clusterIP":"10.0.0.1","clusterIPs":["10.0.0.1","fd00::1"],"ipFamilyPolicy":"RequireDualStack"}}`,
		`{"spec":{"type":"ExternalName","externalName":"x","ipFamily":7}}`,
		`{"spec":{"clusterIPs":["None","None","x"]}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), []byte(`{"spec":{"clusterIP":"10.0.0.1","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack"}}`), uint8(0))
	}
	shapes := [][]corev1.IPFamily{clusterV4, clusterV6, clusterV4V6, clusterV6V4}
	f.Fuzz(func(t *testing.T, obj, old []byte, sel uint8) {
		c := shapes[int(sel)%len(shapes)]
		op := Create
		if sel&0x10 != 0 {
			op = Update
		}
		d, err := Evaluate(Input{Families: c, Operation: op, Object: obj, OldObject: old})
		if err != nil || op != Create || d.Skip != "" || d.Service == nil {
			return
		}
		// A configured default never rejects what the apiserver's own
		// default accepts (EffectiveDefault: the rule the
		// MutatingAdmissionPolicy rendering relies on).
		for _, p := range []corev1.IPFamilyPolicy{single, prefer, require} {
			if _, err := Evaluate(Input{Families: c, Operation: Create, Object: obj, DefaultPolicy: &p}); err != nil {
				t.Fatalf("default %s rejects a Service accepted without it: %v\nobject: %s", p, err, obj)
			}
		}
		// Apply the decision the way /mutate does and evaluate again.
		out := d.Service.DeepCopy()
		if d.Writes(FieldIPFamilyPolicy) {
			p := d.Policy
			out.Spec.IPFamilyPolicy = &p
		}
		if d.Writes(FieldIPFamilies) {
			out.Spec.IPFamilies = d.Families
		}
		js, jerr := jsonOf(out)
		if jerr != nil {
			return
		}
		d2, err := Evaluate(Input{Families: c, Operation: Create, Object: js})
		if err != nil {
			t.Fatalf("output of a successful decision rejected on re-invocation: %v\nobject: %s", err, js)
		}
		if d2.Writes(FieldIPFamilyPolicy) || d2.Writes(FieldIPFamilies) {
			t.Fatalf("re-invocation not a no-op: writes %b\nobject: %s", d2.Write, js)
		}
	})
}
