package services

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// want is the expected stored dual-stack shape of a Service.
type want struct {
	policy   corev1.IPFamilyPolicy
	families []corev1.IPFamily // also the family of each clusterIP, in order
}

// checkShape asserts policy, families, one clusterIP per family inside the
// cluster's range of that family, and clusterIP == clusterIPs[0].
func checkShape(t *testing.T, got *corev1.Service, w want) {
	t.Helper()
	if got.Spec.IPFamilyPolicy == nil || *got.Spec.IPFamilyPolicy != w.policy {
		t.Errorf("%s: ipFamilyPolicy = %v, want %s", got.Name, deref(got.Spec.IPFamilyPolicy), w.policy)
	}
	if !equalFamilies(got.Spec.IPFamilies, w.families) {
		t.Errorf("%s: ipFamilies = %v, want %v", got.Name, got.Spec.IPFamilies, w.families)
	}
	if len(got.Spec.ClusterIPs) != len(w.families) {
		t.Fatalf("%s: clusterIPs = %v, want one per family %v", got.Name, got.Spec.ClusterIPs, w.families)
	}
	if got.Spec.ClusterIP != got.Spec.ClusterIPs[0] {
		t.Errorf("%s: clusterIP %s != clusterIPs[0] %s", got.Name, got.Spec.ClusterIP, got.Spec.ClusterIPs[0])
	}
	for i, ip := range got.Spec.ClusterIPs {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			t.Errorf("%s: clusterIPs[%d] = %q: %v", got.Name, i, ip, err)
			continue
		}
		if framework.FamilyOf(ip) != string(w.families[i]) {
			t.Errorf("%s: clusterIPs[%d] = %s is not %s", got.Name, i, ip, w.families[i])
		}
		if p, ok := cidrOf(t, w.families[i]); !ok || !p.Contains(a) {
			t.Errorf("%s: clusterIPs[%d] = %s outside the cluster's %s range %v", got.Name, i, ip, w.families[i], p)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func equalFamilies(a, b []corev1.IPFamily) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDocExamples replays the Services of the Kubernetes task "Validate
// IPv4/IPv6 dual-stack" (shared seeds 000/001) through the webhook and checks
// the results the docs say a dual-stack cluster shows.
func TestDocExamples(t *testing.T) {
	fams := clusterFamilies(t)
	needDualStack(t)
	primary, secondary := fams[0], fams[1]
	ns := newNamespace(t, withWebhook, "examples", nil, nil)

	tests := []struct {
		name string
		svc  *corev1.Service
		want want
	}{
		{
			name: "no policy: SingleStack of the primary family",
			svc:  svc("my-service"),
			want: want{corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{primary}},
		},
		{
			name: "ipFamilies IPv6: SingleStack IPv6",
			svc:  svc("my-service-v6", framework.WithFamilies(corev1.IPv6Protocol)),
			want: want{corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{corev1.IPv6Protocol}},
		},
		{
			name: "PreferDualStack: two IPs, clusterIP of the first family",
			svc:  svc("my-service-dual", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)),
			want: want{corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{primary, secondary}},
		},
		{
			name: "LoadBalancer PreferDualStack IPv6 first",
			svc: svc("my-service-lb", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack),
				framework.WithFamilies(corev1.IPv6Protocol), func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }),
			want: want{corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustCreate(t, ns, tt.svc)
			got := get(t, ns, tt.svc.Name)
			checkShape(t, got, tt.want)
			if tt.svc.Spec.Type == corev1.ServiceTypeLoadBalancer && got.Spec.Type != corev1.ServiceTypeLoadBalancer {
				t.Errorf("type = %s, want LoadBalancer", got.Spec.Type)
			}
		})
	}
}
