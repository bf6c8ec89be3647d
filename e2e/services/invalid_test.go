package services

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestInvalidRejectedLikeTheAPIServer sends Services the apiserver rejects,
// once to a namespace without the webhook and once to one with it: the
// webhook must deny them itself (the apiserver relays `admission webhook ...
// denied the request`) with the same HTTP code and the same field errors.
func TestInvalidRejectedLikeTheAPIServer(t *testing.T) {
	fams := clusterFamilies(t)
	primary := fams[0]
	other := corev1.IPv6Protocol
	if primary == corev1.IPv6Protocol {
		other = corev1.IPv4Protocol
	}
	plainNS := newNamespace(t, withoutWebhook, "invalid-plain", nil, nil)
	hookNS := newNamespace(t, withWebhook, "invalid-hook", nil, nil)

	type tc struct {
		name string
		svc  func(n uint64) *corev1.Service
		// webhookDenies: the denial must come from the webhook itself (every
		// case the webhook sees; ExternalName is the exception, left to the
		// apiserver by design: the chart's matchConditions skip it).
		webhookDenies bool
	}
	tests := []tc{
		{"SingleStack with two families", func(uint64) *corev1.Service {
			return svc("s", framework.WithPolicy(corev1.IPFamilyPolicySingleStack), framework.WithFamilies(primary, other))
		}, true},
		{"duplicate family", func(uint64) *corev1.Service {
			return svc("s", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack), framework.WithFamilies(primary, primary))
		}, true},
		{"unsupported family", func(uint64) *corev1.Service { return svc("s", framework.WithFamilies("IPv5")) }, true},
		{"unsupported policy", func(uint64) *corev1.Service { return svc("s", framework.WithPolicy("garbage")) }, true},
		{"three families", func(uint64) *corev1.Service {
			return svc("s", framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(primary, other, primary))
		}, true},
		{"malformed clusterIP", func(uint64) *corev1.Service { return svc("s", framework.WithClusterIPs("10.96.300.1")) }, true},
		{"two clusterIPs of one family", func(n uint64) *corev1.Service {
			return svc("s", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack),
				framework.WithClusterIPs(pinnedIP(t, primary, n), pinnedIP(t, primary, n+1)))
		}, true},
		{"clusterIP differs from clusterIPs[0]", func(n uint64) *corev1.Service {
			s := svc("s", framework.WithClusterIPs(pinnedIP(t, primary, n)))
			s.Spec.ClusterIP = pinnedIP(t, primary, n+1)
			return s
		}, true},
		{"clusterIPs without clusterIP", func(n uint64) *corev1.Service {
			s := svc("s", framework.WithClusterIPs(pinnedIP(t, primary, n)))
			s.Spec.ClusterIP = ""
			return s
		}, true},
		{"family does not match clusterIP", func(n uint64) *corev1.Service {
			return svc("s", framework.WithFamilies(other), framework.WithClusterIPs(pinnedIP(t, primary, n)))
		}, true},
		{"None not alone", func(n uint64) *corev1.Service {
			return svc("s", framework.WithClusterIPs(corev1.ClusterIPNone, pinnedIP(t, primary, n)))
		}, true},
		{"SingleStack with two clusterIPs", func(n uint64) *corev1.Service {
			return svc("s", framework.WithPolicy(corev1.IPFamilyPolicySingleStack),
				framework.WithClusterIPs(pinnedIP(t, primary, n), pinnedIP(t, other, n)))
		}, true},
		{"ExternalName with ipFamilyPolicy", func(uint64) *corev1.Service {
			s := svc("s", framework.WithPolicy(corev1.IPFamilyPolicySingleStack))
			s.Spec.Type, s.Spec.ExternalName, s.Spec.Selector = corev1.ServiceTypeExternalName, "example.com", nil
			return s
		}, false},
	}
	if len(fams) == 1 {
		tests = append(tests,
			tc{"family not configured", func(uint64) *corev1.Service { return svc("s", framework.WithFamilies(other)) }, true},
			tc{"RequireDualStack on a single-stack cluster", func(uint64) *corev1.Service {
				return svc("s", framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack))
			}, true},
		)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := uint64(100 + 10*i)
			_, errPlain := create(t, plainNS, tt.svc(n))
			_, errHook := create(t, hookNS, tt.svc(n))
			if errPlain == nil {
				t.Fatalf("test case is wrong: the apiserver admitted it")
			}
			plain, hooked := framework.OutcomeOf(nil, errPlain), framework.OutcomeOf(nil, errHook)
			for _, d := range framework.Diff(plain, hooked) {
				t.Error(d)
			}
			if errHook != nil && tt.webhookDenies {
				if _, byWebhook := framework.StripWebhookPrefix(errHook.Error()); !byWebhook {
					t.Errorf("denied by the apiserver, not by the webhook: %v", errHook)
				}
			}
			if errHook != nil {
				t.Logf("apiserver: %s\nwebhook:   %s", errPlain, errHook)
			}
			if t.Failed() {
				t.Logf("apiserver causes: %s", strings.Join(framework.CauseTexts(plain.Error), " | "))
			}
		})
	}
}
