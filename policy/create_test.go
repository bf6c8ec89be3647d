package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Hand-written CREATE cases, each traceable to a rule of the rule book
// (docs/dualstack-rules.md §1) or upstream's TestCreateInitIPFields. The complete
// 560-cell grid is checked against the real apiserver's answers in
// grid_test.go.
func TestCreateRules(t *testing.T) {
	sel := map[string]any{"app": "x"}
	tests := []struct {
		name    string
		cluster []corev1.IPFamily
		spec    spec
		want    want
	}{
		// §1.2 policy default and default family.
		{"v4: no policy → SingleStack [IPv4]", clusterV4, spec{}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v6: no policy → SingleStack [IPv6]", clusterV6, spec{}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
		{"v4v6: no policy → SingleStack [IPv4]", clusterV4V6, spec{}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v6v4: no policy → SingleStack [IPv6]", clusterV6V4, spec{}, want{policy: single, families: fams(v6), allocate: fams(v6)}},

		// Requested family on dual-stack clusters.
		{"v4v6: ipFamilies [IPv6] → SingleStack [IPv6]", clusterV4V6, spec{"ipFamilies": []string{"IPv6"}}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
		{"v6v4: ipFamilies [IPv4] → SingleStack [IPv4]", clusterV6V4, spec{"ipFamilies": []string{"IPv4"}}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"v4: ipFamilies [IPv6] → not configured", clusterV4, spec{"ipFamilies": []string{"IPv6"}},
			want{errs: []string{`spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster`}}},
		{"v6: ipFamilies [IPv4] → not configured", clusterV6, spec{"ipFamilies": []string{"IPv4"}},
			want{errs: []string{`spec.ipFamilies[0]: Invalid value: "IPv4": not configured on this cluster`}}},

		// Family inferred from a given clusterIP.
		{"v4v6: clusterIP v6 → SingleStack [IPv6], nothing to allocate", clusterV4V6, spec{"clusterIP": "fd00::5"}, want{policy: single, families: fams(v6)}},
		{"v6v4: clusterIP v4 → SingleStack [IPv4]", clusterV6V4, spec{"clusterIP": "10.0.0.5"}, want{policy: single, families: fams(v4)}},
		{"v4: clusterIP v6 → clusterIPs[0] not configured (bad value is the list)", clusterV4, spec{"clusterIP": "fd00::5"},
			want{errs: []string{`spec.clusterIPs[0]: Invalid value: ["fd00::5"]: IPv6 is not configured on this cluster`}}},
		{"v6: clusterIP v4 → clusterIPs[0] not configured", clusterV6, spec{"clusterIP": "10.0.0.5"},
			want{errs: []string{`spec.clusterIPs[0]: Invalid value: ["10.0.0.5"]: IPv4 is not configured on this cluster`}}},

		// PreferDualStack vs RequireDualStack.
		{"v4: PreferDualStack stays single", clusterV4, spec{"ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v4), allocate: fams(v4)}},
		{"v6: PreferDualStack stays single", clusterV6, spec{"ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v6), allocate: fams(v6)}},
		{"v4v6: PreferDualStack → both, cluster order", clusterV4V6, spec{"ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v4, v6), allocate: fams(v4, v6)}},
		{"v6v4: PreferDualStack → both, cluster order", clusterV6V4, spec{"ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v6, v4), allocate: fams(v6, v4)}},
		{"v4v6: PreferDualStack [IPv6] → IPv6 first", clusterV4V6, spec{"ipFamilyPolicy": "PreferDualStack", "ipFamilies": []string{"IPv6"}}, want{policy: prefer, families: fams(v6, v4), allocate: fams(v6, v4)}},
		{"v4v6: RequireDualStack clusterIP v6 → v6 first, allocate v4", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "clusterIP": "fd00::5"}, want{policy: require, families: fams(v6, v4), allocate: fams(v4)}},
		{"v4: PreferDualStack [IPv4,IPv6] → ipFamilies[1] not configured", clusterV4, spec{"ipFamilyPolicy": "PreferDualStack", "ipFamilies": []string{"IPv4", "IPv6"}},
			want{errs: []string{`spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster`}}},
		{"v4: RequireDualStack → not dual-stack", clusterV4, spec{"ipFamilyPolicy": "RequireDualStack"},
			want{errs: []string{`spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`}}},
		{"v6: RequireDualStack [IPv6,IPv4] → both errors together", clusterV6, spec{"ipFamilyPolicy": "RequireDualStack", "ipFamilies": []string{"IPv6", "IPv4"}},
			want{errs: []string{`this cluster is not configured for dual-stack services`, `spec.ipFamilies[1]: Invalid value: "IPv4": not configured on this cluster`}}},
		{"v4v6: RequireDualStack two IPs v6 first", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "clusterIP": "fd00::5", "clusterIPs": []string{"fd00::5", "10.0.0.5"}}, want{policy: require, families: fams(v6, v4)}},

		// Two IPs or two families with no policy (E2/E15, since 1.23).
		{"v4v6: two families no policy", clusterV4V6, spec{"ipFamilies": []string{"IPv4", "IPv6"}},
			want{errs: []string{`spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified`}}},
		{"v6v4: two IPs no policy", clusterV6V4, spec{"clusterIP": "fd00::5", "clusterIPs": []string{"fd00::5", "10.0.0.5"}},
			want{errs: []string{`when multiple cluster IPs are specified`}}},
		{"v4v6: SingleStack two IPs two families → both errors", clusterV4V6, spec{"ipFamilyPolicy": "SingleStack", "ipFamilies": []string{"IPv4", "IPv6"}, "clusterIP": "10.0.0.5", "clusterIPs": []string{"10.0.0.5", "fd00::5"}},
			want{errs: []string{`when multiple cluster IPs are specified`, `when multiple IP families are specified`}}},

		// Headless with selector: like headful, no IPs.
		{"v4: headless+selector → SingleStack [IPv4]", clusterV4, spec{"clusterIP": "None", "selector": sel}, want{policy: single, families: fams(v4)}},
		{"v4v6: headless+selector Prefer → both", clusterV4V6, spec{"clusterIP": "None", "selector": sel, "ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v4, v6)}},
		{"v6: headless+selector Require → not dual-stack", clusterV6, spec{"clusterIP": "None", "selector": sel, "ipFamilyPolicy": "RequireDualStack"},
			want{errs: []string{`this cluster is not configured for dual-stack services`}}},

		// Headless selectorless: RequireDualStack default, no cluster checks.
		{"v4: headless selectorless → RequireDualStack [IPv4,IPv6]", clusterV4, spec{"clusterIP": "None"}, want{policy: require, families: fams(v4, v6)}},
		{"v6: headless selectorless → RequireDualStack [IPv6,IPv4]", clusterV6, spec{"clusterIP": "None"}, want{policy: require, families: fams(v6, v4)}},
		{"v4v6: headless selectorless → RequireDualStack [IPv4,IPv6]", clusterV4V6, spec{"clusterIP": "None"}, want{policy: require, families: fams(v4, v6)}},
		{"v6v4: headless selectorless → RequireDualStack [IPv6,IPv4]", clusterV6V4, spec{"clusterIP": "None"}, want{policy: require, families: fams(v6, v4)}},
		{"v4: headless selectorless SingleStack [IPv6] accepted", clusterV4, spec{"clusterIP": "None", "ipFamilyPolicy": "SingleStack", "ipFamilies": []string{"IPv6"}}, want{policy: single, families: fams(v6)}},
		{"v6: headless selectorless [IPv4] → RequireDualStack [IPv4,IPv6]", clusterV6, spec{"clusterIP": "None", "ipFamilies": []string{"IPv4"}}, want{policy: require, families: fams(v4, v6)}},
		{"v4: headless selectorless SingleStack two families still rejected", clusterV4, spec{"clusterIP": "None", "ipFamilyPolicy": "SingleStack", "ipFamilies": []string{"IPv4", "IPv6"}},
			want{errs: []string{`when multiple IP families are specified`}}},

		// NodePort / LoadBalancer.
		{"v4v6: LoadBalancer PreferDualStack [IPv6] (seed)", clusterV4V6, spec{"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ipFamilies": []string{"IPv6"}}, want{policy: prefer, families: fams(v6, v4), allocate: fams(v6, v4)}},
		{"v4: NodePort headless rejected", clusterV4, spec{"type": "NodePort", "clusterIP": "None", "selector": sel},
			want{errs: []string{`spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for NodePort services`}}},
		{"v6v4: LoadBalancer headless rejected", clusterV6V4, spec{"type": "LoadBalancer", "clusterIP": "None", "selector": sel},
			want{errs: []string{`may not be set to 'None' for LoadBalancer services`}}},

		// ExternalName: nothing defaulted, IP fields forbidden.
		{"v4v6: ExternalName untouched", clusterV4V6, spec{"type": "ExternalName", "externalName": "example.com"}, want{}},
		{"v4v6: ExternalName with ipFamilies forbidden", clusterV4V6, spec{"type": "ExternalName", "externalName": "example.com", "ipFamilies": []string{"IPv4"}, "ipFamilyPolicy": "SingleStack"},
			want{errs: []string{`spec.ipFamilies: Forbidden: may not be set for ExternalName services`, `spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services`}}},

		// §1.5 input validation messages.
		{"clusterIPs[0] differs from clusterIP", clusterV4V6, spec{"clusterIP": "10.0.0.5", "clusterIPs": []string{"10.0.0.6"}},
			want{errs: []string{`spec.clusterIPs: Invalid value: ["10.0.0.6"]: first value must match ` + "`clusterIP`"}}},
		{"clusterIPs without clusterIP", clusterV6V4, spec{"clusterIPs": []string{"fd00::5"}},
			want{errs: []string{`spec.clusterIPs: Invalid value: ["fd00::5"]: must be empty when ` + "`clusterIP`" + ` is not specified`}}},
		{"policy garbage", clusterV4, spec{"ipFamilyPolicy": "garbage"},
			want{errs: []string{`spec.ipFamilyPolicy: Unsupported value: "garbage": supported values: "PreferDualStack", "RequireDualStack", "SingleStack"`}}},
		{"family garbage", clusterV6, spec{"ipFamilies": []string{"garbage"}},
			want{errs: []string{`spec.ipFamilies[0]: Unsupported value: "garbage": supported values: "IPv4", "IPv6"`}}},
		{"duplicate family", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "ipFamilies": []string{"IPv4", "IPv4"}},
			want{errs: []string{`spec.ipFamilies[1]: Duplicate value: "IPv4"`}}},
		{"None not alone", clusterV4V6, spec{"clusterIP": "None", "clusterIPs": []string{"None", "10.0.0.5"}},
			want{errs: []string{`spec.clusterIPs: Invalid value: ["None","10.0.0.5"]: 'None' must be the first and only value`}}},
		{"unparsable IP", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.0.0.5", "clusterIPs": []string{"10.0.0.5", "bogus"}},
			want{errs: []string{`spec.clusterIPs[1]: Invalid value: "bogus": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)`}}},
		{"leading zeros (StrictIPCIDRValidation)", clusterV4, spec{"clusterIP": "010.0.0.5"},
			want{errs: []string{`spec.clusterIPs[0]: Invalid value: "010.0.0.5": must not have leading 0s`}}},
		{"IPv4-mapped IPv6", clusterV6, spec{"clusterIP": "::ffff:1.2.3.4"},
			want{errs: []string{`must not be an IPv4-mapped IPv6 address`}}},
		{"three IPs", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.0.0.5", "clusterIPs": []string{"10.0.0.5", "fd00::5", "10.0.0.6"}},
			want{errs: []string{`may only hold up to 2 values`}}},
		{"two IPs same family", clusterV4V6, spec{"ipFamilyPolicy": "RequireDualStack", "clusterIP": "10.0.0.5", "clusterIPs": []string{"10.0.0.5", "10.0.0.6"}},
			want{errs: []string{`may specify no more than one IP for each IP family`}}},
		{"IP does not match ipFamilies[0]", clusterV4V6, spec{"ipFamilies": []string{"IPv4"}, "clusterIP": "fd00::5"},
			want{errs: []string{"spec.clusterIPs[0]: Invalid value: \"fd00::5\": expected an IPv4 value as indicated by `ipFamilies[0]`"}}},
		{"v6 IP does not match ipFamilies[0] IPv6", clusterV6V4, spec{"ipFamilies": []string{"IPv6"}, "clusterIP": "10.0.0.5"},
			want{errs: []string{"expected an IPv6 value as indicated by `ipFamilies[0]`"}}},
		{"non-canonical IPv6 accepted with a warning", clusterV6, spec{"clusterIP": "FD00:0:0:0:0:0:0:5"}, want{policy: single, families: fams(v6), warn: "canonical"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Evaluate(Input{Families: tc.cluster, Operation: Create, Object: svcJSON(t, "svc", tc.spec)})
			check(t, d, err, tc.want)
		})
	}
}

// The examples of the Kubernetes "validate dual-stack" task page (seeds
// 000/001), on a dual-stack IPv4-primary cluster like the page's.
func TestValidateDualStackTaskExamples(t *testing.T) {
	sel := map[string]any{"app.kubernetes.io/name": "MyApp"}
	tests := []struct {
		name string
		spec spec
		want want
	}{
		{"no policy → SingleStack IPv4", spec{"selector": sel}, want{policy: single, families: fams(v4), allocate: fams(v4)}},
		{"ipFamilies [IPv6] → SingleStack IPv6", spec{"selector": sel, "ipFamilies": []string{"IPv6"}}, want{policy: single, families: fams(v6), allocate: fams(v6)}},
		{"PreferDualStack → IPv4 then IPv6", spec{"selector": sel, "ipFamilyPolicy": "PreferDualStack"}, want{policy: prefer, families: fams(v4, v6), allocate: fams(v4, v6)}},
		{"LoadBalancer PreferDualStack [IPv6] → IPv6 first", spec{"selector": sel, "type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ipFamilies": []string{"IPv6"}}, want{policy: prefer, families: fams(v6, v4), allocate: fams(v6, v4)}},
		{"legacy ipFamily: IPv4", spec{"selector": sel, "ipFamily": "IPv4"}, want{policy: single, families: fams(v4), allocate: fams(v4), warn: "rewritten as ipFamilies: [IPv4], ipFamilyPolicy: SingleStack"}},
		{"legacy ipFamily: IPv6 LoadBalancer", spec{"selector": sel, "type": "LoadBalancer", "ipFamily": "IPv6"}, want{policy: single, families: fams(v6), allocate: fams(v6), warn: "spec.ipFamily: IPv6 was removed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Evaluate(Input{Families: clusterV4V6, Operation: Create, Object: svcJSON(t, "my-service", tc.spec)})
			check(t, d, err, tc.want)
		})
	}
}
