package policy

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Stored Services as the apiserver keeps them (all four fields set), in the
// IPv4-first and IPv6-first variants so every UPDATE rule runs in both
// dual-stack orders.
type stored struct {
	cluster        []corev1.IPFamily
	single, dual   spec // SingleStack headful, RequireDualStack headful
	prim, sec      corev1.IPFamily
	primIP, secIP  string
	otherPrimaryIP string // an IP of the primary family that is not primIP
}

var orders = map[string]stored{
	"v4v6": {cluster: clusterV4V6, prim: v4, sec: v6, primIP: "10.0.0.5", secIP: "fd00::7", otherPrimaryIP: "10.0.0.9"},
	"v6v4": {cluster: clusterV6V4, prim: v6, sec: v4, primIP: "fd00::5", secIP: "10.0.0.7", otherPrimaryIP: "fd00::9"},
}

func singleOld(o stored) spec {
	return spec{"selector": map[string]any{"a": "b"}, "clusterIP": o.primIP, "clusterIPs": []string{o.primIP},
		"ipFamilies": []corev1.IPFamily{o.prim}, "ipFamilyPolicy": "SingleStack"}
}

func dualOld(o stored, policy string) spec {
	return spec{"selector": map[string]any{"a": "b"}, "clusterIP": o.primIP, "clusterIPs": []string{o.primIP, o.secIP},
		"ipFamilies": []corev1.IPFamily{o.prim, o.sec}, "ipFamilyPolicy": policy}
}

func merge(base spec, over spec) spec {
	out := spec{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// omit lists fields a PUT leaves out.
func omit(fields ...string) spec {
	s := spec{}
	for _, f := range fields {
		s[f] = nil
	}
	return s
}

var allIPFields = omit("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")

func TestUpdateRules(t *testing.T) {
	sel := map[string]any{"a": "b"}
	for order, o := range orders {
		tests := []struct {
			name     string
			old, new spec
			want     want
		}{
			{"single: everything omitted → unchanged", singleOld(o), merge(singleOld(o), allIPFields),
				want{policy: single, families: fams(o.prim)}},
			{"single: same object → unchanged", singleOld(o), singleOld(o), want{policy: single, families: fams(o.prim)}},
			{"single → PreferDualStack upgrades, secondary allocated", singleOld(o), merge(singleOld(o), spec{"ipFamilyPolicy": "PreferDualStack"}),
				want{policy: prefer, families: fams(o.prim, o.sec), allocate: fams(o.sec)}},
			{"single → RequireDualStack, IPs and families omitted", singleOld(o), merge(singleOld(o), spec{"ipFamilyPolicy": "RequireDualStack", "clusterIPs": nil, "ipFamilies": nil}),
				want{policy: require, families: fams(o.prim, o.sec), allocate: fams(o.sec)}},
			{"single → RequireDualStack with pinned secondary", singleOld(o), merge(singleOld(o), spec{"ipFamilyPolicy": "RequireDualStack", "clusterIPs": []string{o.primIP, o.secIP}}),
				want{policy: require, families: fams(o.prim, o.sec)}},
			{"single: two families with inherited SingleStack", singleOld(o), merge(singleOld(o), spec{"ipFamilyPolicy": nil, "ipFamilies": []corev1.IPFamily{o.prim, o.sec}}),
				want{errs: []string{`spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified`}}},
			{"single: families in the wrong order", singleOld(o), merge(singleOld(o), spec{"ipFamilyPolicy": "RequireDualStack", "ipFamilies": []corev1.IPFamily{o.sec, o.prim}}),
				want{errs: []string{"spec.clusterIPs[0]: Invalid value: \"" + o.primIP + "\": expected an " + string(o.sec) + " value as indicated by `ipFamilies[0]`"}}},
			{"single: primary IP changed", singleOld(o), merge(singleOld(o), spec{"clusterIP": o.otherPrimaryIP, "clusterIPs": []string{o.otherPrimaryIP}}),
				want{errs: []string{`spec.clusterIPs[0]: Invalid value: ["` + o.otherPrimaryIP + `"]: may not change once set`}}},

			{"dual: everything omitted → unchanged", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), allIPFields),
				want{policy: require, families: fams(o.prim, o.sec)}},
			{"dual → SingleStack alone downgrades", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "SingleStack"}),
				want{policy: single, families: fams(o.prim), release: []string{o.secIP}}},
			{"dual → SingleStack + one family downgrades", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "SingleStack", "ipFamilies": []corev1.IPFamily{o.prim}}),
				want{policy: single, families: fams(o.prim), release: []string{o.secIP}}},
			{"dual → SingleStack + one clusterIP downgrades", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "SingleStack", "clusterIPs": []string{o.primIP}, "ipFamilies": nil}),
				want{policy: single, families: fams(o.prim), release: []string{o.secIP}}},
			{"dual: one clusterIP without SingleStack", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": nil, "clusterIPs": []string{o.primIP}}),
				want{errs: []string{`spec.ipFamilyPolicy: Invalid value: "RequireDualStack": must be 'SingleStack' to release the secondary cluster IP`}}},
			{"dual: one family with PreferDualStack", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "PreferDualStack", "ipFamilies": []corev1.IPFamily{o.prim}}),
				want{errs: []string{`must be 'SingleStack' to release the secondary IP family`}}},
			{"dual → SingleStack keeping the secondary family", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "SingleStack", "ipFamilies": []corev1.IPFamily{o.sec}}),
				want{errs: []string{"expected an " + string(o.sec) + " value as indicated by `ipFamilies[0]`"}}},
			{"dual → SingleStack keeping the secondary IP (upstream quirk)", dualOld(o, "RequireDualStack"), merge(dualOld(o, "RequireDualStack"), spec{"ipFamilyPolicy": "SingleStack", "clusterIP": o.secIP, "clusterIPs": []string{o.secIP}, "ipFamilies": nil}),
				want{errs: []string{`spec.clusterIPs[0]: Invalid value: ["` + o.secIP + `"]: may not change once set`, `spec.ipFamilies[0]: Invalid value: ["` + o.secIP + `"]: may not change once set`}}},

			{"prefer single-family, GET-modify-PUT → no auto-upgrade",
				merge(singleOld(o), spec{"ipFamilyPolicy": "PreferDualStack"}), merge(singleOld(o), spec{"ipFamilyPolicy": "PreferDualStack", "ports": []any{map[string]any{"port": 81}}}),
				want{policy: prefer, families: fams(o.prim)}},
			{"prefer single-family, PUT without families → upgraded",
				merge(singleOld(o), spec{"ipFamilyPolicy": "PreferDualStack"}), merge(singleOld(o), spec{"ipFamilyPolicy": "PreferDualStack", "ipFamilies": nil, "clusterIPs": nil, "clusterIP": nil}),
				want{policy: prefer, families: fams(o.prim, o.sec), allocate: fams(o.sec)}},
			{"prefer dual, PUT with the primary IP only",
				dualOld(o, "PreferDualStack"), merge(dualOld(o, "PreferDualStack"), spec{"ipFamilyPolicy": nil, "ipFamilies": nil, "clusterIPs": []string{o.primIP}}),
				want{errs: []string{`spec.ipFamilyPolicy: Invalid value: "PreferDualStack": must be 'SingleStack' to release the secondary cluster IP`}}},

			{"headless single → PreferDualStack",
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim}, "ipFamilyPolicy": "SingleStack"},
				spec{"selector": sel, "clusterIP": "None", "ipFamilyPolicy": "PreferDualStack"},
				want{policy: prefer, families: fams(o.prim, o.sec)}},
			{"headless dual → SingleStack",
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim, o.sec}, "ipFamilyPolicy": "RequireDualStack"},
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim, o.sec}, "ipFamilyPolicy": "SingleStack"},
				want{policy: single, families: fams(o.prim)}},
			{"headless may change families",
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim}, "ipFamilyPolicy": "SingleStack"},
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.sec}, "ipFamilyPolicy": "SingleStack"},
				want{policy: single, families: fams(o.sec)}},
			{"headless → NodePort rejected",
				spec{"selector": sel, "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim}, "ipFamilyPolicy": "SingleStack"},
				spec{"selector": sel, "type": "NodePort", "clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{o.prim}, "ipFamilyPolicy": "SingleStack"},
				want{errs: []string{`may not be set to 'None' for NodePort services`}}},

			{"ClusterIP → ExternalName releases every IP", dualOld(o, "RequireDualStack"),
				merge(dualOld(o, "RequireDualStack"), spec{"type": "ExternalName", "externalName": "example.com", "selector": nil}),
				want{release: []string{o.primIP, o.secIP}}},
			{"ClusterIP → ExternalName changing families is forbidden", singleOld(o),
				merge(singleOld(o), spec{"type": "ExternalName", "externalName": "example.com", "ipFamilies": []corev1.IPFamily{o.sec}}),
				want{errs: []string{`spec.ipFamilies: Forbidden: may not be set for ExternalName services`}}},
			{"ExternalName → ClusterIP allocates like a create",
				spec{"type": "ExternalName", "externalName": "example.com"}, spec{"type": "ClusterIP", "selector": sel},
				want{policy: single, families: fams(o.prim), allocate: fams(o.prim)}},
			{"ExternalName → ClusterIP PreferDualStack allocates both",
				spec{"type": "ExternalName", "externalName": "example.com"}, spec{"type": "ClusterIP", "selector": sel, "ipFamilyPolicy": "PreferDualStack"},
				want{policy: prefer, families: fams(o.prim, o.sec), allocate: fams(o.prim, o.sec)}},

			{"stored before 1.20 (no clusterIPs, no families): PUT unchanged", spec{"selector": sel, "clusterIP": o.primIP},
				merge(spec{"selector": sel, "clusterIP": o.primIP}, spec{}),
				want{policy: single, families: fams(o.prim)}},

			{"legacy ipFamily = primary on a dual-stack Service: dropped, no downgrade", dualOld(o, "RequireDualStack"),
				merge(dualOld(o, "RequireDualStack"), spec{"ipFamily": string(o.prim), "ipFamilyPolicy": nil, "ipFamilies": nil}),
				want{policy: require, families: fams(o.prim, o.sec), warn: "was dropped"}},
			{"legacy ipFamily ≠ primary is immutable", singleOld(o), merge(singleOld(o), spec{"ipFamily": string(o.sec)}),
				want{errs: []string{`spec.ipFamily: Invalid value: "` + string(o.sec) + `": field is immutable`}}},
		}
		for _, tc := range tests {
			t.Run(order+"/"+tc.name, func(t *testing.T) {
				d, err := Evaluate(Input{Families: o.cluster, Operation: Update,
					Object: svcJSON(t, "svc", tc.new), OldObject: svcJSON(t, "svc", tc.old)})
				check(t, d, err, tc.want)
				if err == nil && d.Writes(FieldIPFamilyPolicy|FieldIPFamilies) {
					t.Errorf("UPDATE must not write policy or families, Write=%b", d.Write)
				}
			})
		}
	}
}

func TestUpdateOnSingleStackCluster(t *testing.T) {
	for name, c := range map[string][]corev1.IPFamily{"v4": clusterV4, "v6": clusterV6} {
		ip := "10.0.0.5"
		if c[0] == v6 {
			ip = "fd00::5"
		}
		old := spec{"selector": map[string]any{"a": "b"}, "clusterIP": ip, "clusterIPs": []string{ip}, "ipFamilies": []corev1.IPFamily{c[0]}, "ipFamilyPolicy": "SingleStack"}
		t.Run(name+"/RequireDualStack is rejected", func(t *testing.T) {
			d, err := Evaluate(Input{Families: c, Operation: Update, Object: svcJSON(t, "s", merge(old, spec{"ipFamilyPolicy": "RequireDualStack"})), OldObject: svcJSON(t, "s", old)})
			check(t, d, err, want{errs: []string{`this cluster is not configured for dual-stack services`}})
		})
		t.Run(name+"/PreferDualStack stays single", func(t *testing.T) {
			d, err := Evaluate(Input{Families: c, Operation: Update, Object: svcJSON(t, "s", merge(old, spec{"ipFamilyPolicy": "PreferDualStack"})), OldObject: svcJSON(t, "s", old)})
			check(t, d, err, want{policy: prefer, families: fams(c[0])})
		})
		t.Run(name+"/headless selectorless gains a selector (kubernetes#118897)", func(t *testing.T) {
			hl := spec{"clusterIP": "None", "clusterIPs": []string{"None"}, "ipFamilies": []corev1.IPFamily{c[0], otherFamily(c[0])}, "ipFamilyPolicy": "RequireDualStack"}
			d, err := Evaluate(Input{Families: c, Operation: Update, Object: svcJSON(t, "s", merge(hl, spec{"selector": map[string]any{"a": "b"}})), OldObject: svcJSON(t, "s", hl)})
			check(t, d, err, want{errs: []string{`this cluster is not configured for dual-stack services`, `spec.ipFamilies[1]: Invalid value: "` + string(otherFamily(c[0])) + `": not configured on this cluster`}})
		})
	}
}

func TestLegacyCreate(t *testing.T) {
	tests := []struct {
		name    string
		cluster []corev1.IPFamily
		spec    spec
		want    want
	}{
		{"v4: IPv4 → SingleStack [IPv4]", clusterV4, spec{"ipFamily": "IPv4"}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v6: IPv6 → SingleStack [IPv6]", clusterV6, spec{"ipFamily": "IPv6"}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
		{"v4v6: IPv6 → SingleStack [IPv6]", clusterV4V6, spec{"ipFamily": "IPv6"}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
		{"v6v4: IPv4 → SingleStack [IPv4]", clusterV6V4, spec{"ipFamily": "IPv4"}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v4v6: headless selectorless keeps its single family", clusterV4V6, spec{"ipFamily": "IPv6", "clusterIP": "None"}, want{policy: single, families: fams(v6)}},
		{"v6v4: explicit PreferDualStack is kept", clusterV6V4, spec{"ipFamily": "IPv4", "ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v4, v6), allocate: fams(v4, v6)}},
		{"v4v6: matching clusterIP", clusterV4V6, spec{"ipFamily": "IPv6", "clusterIP": "fd00::5"}, want{policy: single, families: fams(v6)}},
		{"invalid value", clusterV4V6, spec{"ipFamily": "garbage"},
			want{errs: []string{`spec.ipFamily: Invalid value: "garbage": only the following families are allowed: IPv4, IPv6`}}},
		{"not a string", clusterV6V4, spec{"ipFamily": 6},
			want{errs: []string{`spec.ipFamily: Invalid value: 6: only the following families are allowed: IPv6, IPv4`}}},
		{"v4: family the cluster lacks", clusterV4, spec{"ipFamily": "IPv6"},
			want{errs: []string{`spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4`}}},
		{"v6: family the cluster lacks", clusterV6, spec{"ipFamily": "IPv4"},
			want{errs: []string{`spec.ipFamily: Invalid value: "IPv4": only the following families are allowed: IPv6`}}},
		{"v4v6: IPv6 with an IPv4 clusterIP", clusterV4V6, spec{"ipFamily": "IPv6", "clusterIP": "10.0.0.5"},
			want{errs: []string{`spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP`}}},
		{"v6v4: IPv4 with an IPv6 clusterIP", clusterV6V4, spec{"ipFamily": "IPv4", "clusterIP": "fd00::5"},
			want{errs: []string{`spec.ipFamily: Invalid value: "IPv4": does not match IPv6 cluster IP`}}},
		{"conflicts with ipFamilies[0]", clusterV4V6, spec{"ipFamily": "IPv4", "ipFamilies": []string{"IPv6"}},
			want{errs: []string{`spec.ipFamily: Invalid value: "IPv4": conflicts with spec.ipFamilies[0] ("IPv6")`}}},
		{"ExternalName: dropped", clusterV4V6, spec{"type": "ExternalName", "externalName": "example.com", "ipFamily": "IPv6"}, want{warn: "ExternalName"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Evaluate(Input{Families: tc.cluster, Operation: Create, Object: svcJSON(t, "svc", tc.spec)})
			check(t, d, err, tc.want)
			if err == nil && !d.Writes(FieldLegacyIPFamily) {
				t.Errorf("spec.ipFamily must be removed")
			}
		})
	}
}

func TestConfiguredDefaultPolicy(t *testing.T) {
	sel := map[string]any{"a": "b"}
	tests := []struct {
		name    string
		cluster []corev1.IPFamily
		def     corev1.IPFamilyPolicy
		spec    spec
		want    want
	}{
		{"v4v6: PreferDualStack default makes a plain Service dual", clusterV4V6, prefer, spec{"selector": sel}, want{policy: prefer, families: fams(v4, v6), allocate: fams(v4, v6)}},
		{"v6v4: PreferDualStack default, cluster order", clusterV6V4, prefer, spec{"selector": sel}, want{policy: prefer, families: fams(v6, v4), allocate: fams(v6, v4)}},
		{"v4: PreferDualStack default stays single", clusterV4, prefer, spec{"selector": sel}, want{policy: prefer, families: fams(v4), allocate: fams(v4)}},
		{"v6: RequireDualStack default falls back with a warning", clusterV6, require, spec{"selector": sel}, want{policy: single, families: fams(v6), allocate: fams(v6), warn: "does not fit"}},
		{"v4v6: explicit SingleStack wins", clusterV4V6, require, spec{"selector": sel, "ipFamilyPolicy": "SingleStack"}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v4v6: headless selectorless keeps the apiserver's RequireDualStack", clusterV4V6, single, spec{"clusterIP": "None"}, want{policy: require, families: fams(v4, v6)}},
		{"v4v6: legacy ipFamily means SingleStack whatever the default", clusterV4V6, prefer, spec{"selector": sel, "ipFamily": "IPv6"}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			def := tc.def
			d, err := Evaluate(Input{Families: tc.cluster, Operation: Create, Object: svcJSON(t, "svc", tc.spec), DefaultPolicy: &def})
			check(t, d, err, tc.want)
		})
	}
}

func TestSkipAndWrites(t *testing.T) {
	kube := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes","namespace":"default"},"spec":{"ports":[{"port":443}]}}`)
	d, err := Evaluate(Input{Families: clusterV4V6, Operation: Create, Object: kube})
	if err != nil || d.Skip == "" {
		t.Fatalf("default/kubernetes must be skipped: %+v %v", d, err)
	}
	for value, skipped := range map[string]bool{"true": true, "": true, "false": false} {
		obj := []byte(`{"metadata":{"name":"s","namespace":"n","labels":{"dualstack-webhook.io/skip":"` + value + `"}},"spec":{"ipFamilyPolicy":"garbage"}}`)
		d, err := Evaluate(Input{Families: clusterV4, Operation: Create, Object: obj})
		if skipped && (err != nil || d.Skip == "") {
			t.Errorf("label value %q: want skip, got %+v %v", value, d, err)
		}
		if !skipped && err == nil {
			t.Errorf("label value %q: want evaluation (and an error), got %+v", value, d)
		}
	}

	d, err = Evaluate(Input{Families: clusterV4, Operation: Create, Object: svcJSON(t, "s", spec{"ipFamilyPolicy": "SingleStack", "ipFamilies": []string{"IPv4"}})})
	if err != nil || d.Write != 0 {
		t.Errorf("fully specified Service: want no writes, got %b %v", d.Write, err)
	}
	d, err = Evaluate(Input{Families: clusterV4V6, Operation: Create, Object: svcJSON(t, "s", spec{})})
	if err != nil || !d.Writes(FieldIPFamilyPolicy) || !d.Writes(FieldIPFamilies) || d.Writes(FieldLegacyIPFamily) {
		t.Errorf("plain Service: want policy+families written, got %b %v", d.Write, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for name, obj := range map[string]string{
		"empty":          ``,
		"null":           `null`,
		"not JSON":       `{"spec":`,
		"wrong kind":     `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`,
		"wrong version":  `{"apiVersion":"v2","kind":"Service","metadata":{"name":"p"}}`,
		"ports a string": `{"spec":{"ports":"80"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Evaluate(Input{Families: clusterV4, Operation: Create, Object: []byte(obj)})
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("want DecodeError, got %v", err)
			}
		})
	}
	if _, err := Evaluate(Input{Families: []corev1.IPFamily{v4, v4}, Operation: Create, Object: []byte(`{}`)}); err == nil {
		t.Error("invalid cluster families must be an error")
	}
}
