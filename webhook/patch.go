package webhook

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
)

// specState is what the posted object's spec holds for the fields the
// webhook writes: whether spec and each member exist (a member holding null
// exists), and their current values.
type specState struct {
	spec, policyKey, familiesKey, legacyKey bool
	clusterIPKey, clusterIPsKey             bool
	policy                                  string
	families                                []corev1.IPFamily
	clusterIP                               string
	clusterIPs                              []string
}

// stateFromTyped reads specState from the Service the policy engine already
// decoded, sparing the hot path another pass over the raw JSON. It only
// answers when the typed spec proves spec exists (a Service the apiserver
// sends always has at least spec.type, ports or a selector); otherwise ok is
// false and the raw object must be read. A nil pointer / empty slice may be
// an absent member or an explicit null: both take "add", which RFC 6902
// §4.1 defines to replace an existing member, so the patch applies either
// way.
func stateFromTyped(svc *corev1.Service, legacy bool) (specState, bool) {
	if svc == nil {
		return specState{}, false
	}
	s := &svc.Spec
	if !specEvidence(s) {
		return specState{}, false
	}
	st := specState{spec: true, legacyKey: legacy}
	if s.IPFamilyPolicy != nil {
		st.policyKey, st.policy = true, string(*s.IPFamilyPolicy)
	}
	if s.ClusterIP != "" {
		st.clusterIPKey, st.clusterIP = true, s.ClusterIP
	}
	if len(s.ClusterIPs) > 0 {
		st.clusterIPsKey, st.clusterIPs = true, s.ClusterIPs
	}
	if len(s.IPFamilies) > 0 {
		st.familiesKey, st.families = true, s.IPFamilies
	}
	return st, true
}

// specEvidence tells whether the typed spec proves that the raw object has
// a spec member (spec.type does not: the engine defaults it).
func specEvidence(s *corev1.ServiceSpec) bool {
	return len(s.Ports) > 0 || s.Selector != nil || s.ClusterIP != "" || len(s.ClusterIPs) > 0 ||
		s.ExternalName != "" || s.IPFamilyPolicy != nil || len(s.IPFamilies) > 0 || s.SessionAffinity != "" ||
		s.ExternalTrafficPolicy != "" || s.InternalTrafficPolicy != nil || s.AllocateLoadBalancerNodePorts != nil
}

// stateFromRaw reads specState exactly from the raw object (slow path:
// hand-posted objects with an empty or missing spec).
func stateFromRaw(raw []byte) (specState, error) {
	var obj struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &obj); err != nil {
		return specState{}, &requestError{"request.object is not a Service: " + oneLine(err.Error())}
	}
	st := specState{spec: obj.Spec != nil}
	var raw1 json.RawMessage
	raw1, st.policyKey = obj.Spec["ipFamilyPolicy"]
	_ = json.Unmarshal(raw1, &st.policy)
	raw1, st.familiesKey = obj.Spec["ipFamilies"]
	_ = json.Unmarshal(raw1, &st.families)
	_, st.legacyKey = obj.Spec["ipFamily"]
	raw1, st.clusterIPKey = obj.Spec["clusterIP"]
	_ = json.Unmarshal(raw1, &st.clusterIP)
	raw1, st.clusterIPsKey = obj.Spec["clusterIPs"]
	_ = json.Unmarshal(raw1, &st.clusterIPs)
	return st, nil
}

// buildPatch turns a Decision into the smallest JSONPatch that makes the raw
// object carry it: "add" when the member is absent, "replace" when present
// with another value, nothing when it already holds the value. It never
// re-renders the object (a typed round-trip would drop fields the compiled
// types do not know: controller-runtime#2982, kueue#3469). A nil result means
// nothing changes; fields names what changed, for logs and audit.
//
// clusterIPs, when not nil, are the pinned addresses (primary first): they
// are written to /spec/clusterIPs and their first one to /spec/clusterIP
// together, because the apiserver rejects a clusterIP that is not
// clusterIPs[0] (docs/dualstack-rules.md §6.2).
func buildPatch(raw []byte, d *policy.Decision, clusterIPs []string) (patch []byte, fields []string, err error) {
	if d.Write == 0 && clusterIPs == nil {
		return nil, nil, nil
	}
	st, ok := stateFromTyped(d.Service, d.Writes(policy.FieldLegacyIPFamily))
	if !ok {
		if st, err = stateFromRaw(raw); err != nil {
			return nil, nil, err
		}
	}
	// The ops are written straight as JSON (constant ops and paths, string
	// values escaped as encoding/json does); the result is what marshalling
	// a list of {op, path, value} objects gives.
	var b []byte
	op := func(verb, path string) {
		if b == nil {
			b = make([]byte, 0, 256)
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		b = append(b, `{"op":"`...)
		b = append(b, verb...)
		b = append(b, `","path":"`...)
		b = append(b, path...)
		b = append(b, '"')
	}
	str := func(v string) { b = append(b, `,"value":`...); b = appendJSONString(b, v); b = append(b, '}') }
	list := func(vs []string) {
		b = append(b, `,"value":[`...)
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
		}
		b = append(b, "]}"...)
	}
	fields = make([]string, 0, 4)
	ensureSpec := func() {
		// A Service without spec (or "spec": null) only comes from hand
		// posted reviews; the apiserver defaults spec.type first.
		if !st.spec {
			op("add", "/spec")
			b = append(b, `,"value":{}}`...)
			st.spec = true
		}
	}
	if d.Writes(policy.FieldIPFamilyPolicy) {
		if d.Policy == "" {
			return nil, nil, errors.New("policy engine asked to write an empty ipFamilyPolicy")
		}
		if !st.policyKey || st.policy != string(d.Policy) {
			ensureSpec()
			op(addOrReplace(st.policyKey), "/spec/ipFamilyPolicy")
			str(string(d.Policy))
			fields = append(fields, "ipFamilyPolicy")
		}
	}
	if d.Writes(policy.FieldIPFamilies) {
		if len(d.Families) == 0 {
			return nil, nil, errors.New("policy engine asked to write empty ipFamilies")
		}
		if !st.familiesKey || !slices.Equal(st.families, d.Families) {
			ensureSpec()
			op(addOrReplace(st.familiesKey), "/spec/ipFamilies")
			b = append(b, `,"value":[`...)
			for i, f := range d.Families {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, string(f))
			}
			b = append(b, "]}"...)
			fields = append(fields, "ipFamilies")
		}
	}
	// "remove" of a missing member fails the whole patch (RFC 6902 §4.2),
	// so only remove what is there.
	if d.Writes(policy.FieldLegacyIPFamily) && st.legacyKey {
		op("remove", "/spec/ipFamily")
		b = append(b, '}')
		fields = append(fields, "-ipFamily")
	}
	if len(clusterIPs) > 0 {
		if st.clusterIP != clusterIPs[0] {
			ensureSpec()
			op(addOrReplace(st.clusterIPKey), "/spec/clusterIP")
			str(clusterIPs[0])
			fields = append(fields, "clusterIP")
		}
		if !slices.Equal(st.clusterIPs, clusterIPs) {
			ensureSpec()
			op(addOrReplace(st.clusterIPsKey), "/spec/clusterIPs")
			list(clusterIPs)
			fields = append(fields, "clusterIPs")
		}
	}
	if b == nil {
		return nil, nil, nil
	}
	return append(b, ']'), fields, nil
}

func addOrReplace(present bool) string {
	if present {
		return "replace"
	}
	return "add"
}
