package webhook

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
)

// patchOp is one RFC 6902 operation. Value is pre-encoded JSON so that the
// op list marshals without reflection over arbitrary values.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// buildPatch turns a Decision into the smallest JSONPatch that makes the raw
// object carry it: "add" when the field is absent, "replace" when present
// with another value, nothing when it already holds the value. It never
// re-renders the object (a typed round-trip would drop fields the compiled
// types do not know: controller-runtime#2982, kueue#3469). A nil result means
// nothing changes.
func buildPatch(obj *objectView, d *policy.Decision) ([]byte, []string, error) {
	var ops []patchOp
	var fields []string
	specAdded := false
	ensureSpec := func() {
		// A Service without spec (or "spec": null) only comes from hand
		// posted reviews; the apiserver defaults spec.type first.
		if !obj.hasSpec && !specAdded {
			ops = append(ops, patchOp{Op: "add", Path: "/spec", Value: json.RawMessage(`{}`)})
			specAdded = true
		}
	}
	if d.Writes(policy.FieldIPFamilyPolicy) {
		if d.Policy == "" {
			return nil, nil, errors.New("policy engine asked to write an empty ipFamilyPolicy")
		}
		var cur string
		raw, present := obj.Spec["ipFamilyPolicy"]
		if !present || json.Unmarshal(raw, &cur) != nil || cur != string(d.Policy) {
			ensureSpec()
			v, _ := json.Marshal(d.Policy)
			ops = append(ops, patchOp{Op: addOrReplace(present), Path: "/spec/ipFamilyPolicy", Value: v})
			fields = append(fields, "ipFamilyPolicy")
		}
	}
	if d.Writes(policy.FieldIPFamilies) {
		if len(d.Families) == 0 {
			return nil, nil, errors.New("policy engine asked to write empty ipFamilies")
		}
		want := make([]string, len(d.Families))
		for i, f := range d.Families {
			want[i] = string(f)
		}
		var cur []string
		raw, present := obj.Spec["ipFamilies"]
		if !present || json.Unmarshal(raw, &cur) != nil || !slices.Equal(cur, want) {
			ensureSpec()
			v, _ := json.Marshal(want)
			ops = append(ops, patchOp{Op: addOrReplace(present), Path: "/spec/ipFamilies", Value: v})
			fields = append(fields, "ipFamilies")
		}
	}
	if d.Writes(policy.FieldLegacyIPFamily) {
		// "remove" of a missing member fails the whole patch (RFC 6902
		// §4.2), so only remove what is there.
		if _, present := obj.Spec["ipFamily"]; present {
			ops = append(ops, patchOp{Op: "remove", Path: "/spec/ipFamily"})
			fields = append(fields, "-ipFamily")
		}
	}
	if len(ops) == 0 {
		return nil, nil, nil
	}
	b, err := json.Marshal(ops)
	return b, fields, err
}

func addOrReplace(present bool) string {
	if present {
		return "replace"
	}
	return "add"
}
