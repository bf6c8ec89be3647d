package services

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestUpdateUpgradeDowngrade walks one Service through single → dual → single
// → dual → single with PUTs, in a namespace with the webhook and in one
// without: every step must end the same way on both paths, the primary
// clusterIP must never change, and the steps with a known answer must give it.
func TestUpdateUpgradeDowngrade(t *testing.T) {
	fams := clusterFamilies(t)
	needDualStack(t)
	primary, secondary := fams[0], fams[1]
	ctx := context.Background()

	type step struct {
		name   string
		mutate func(s *corev1.Service)
		want   *want // nil: whatever the apiserver does, the webhook must match
	}
	steps := []step{
		{"upgrade: PreferDualStack", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicyPreferDualStack
			s.Spec.IPFamilyPolicy = &p
		}, &want{corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{primary, secondary}}},
		{"downgrade: SingleStack, drop the secondary family and IP", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicySingleStack
			s.Spec.IPFamilyPolicy = &p
			s.Spec.IPFamilies = s.Spec.IPFamilies[:1]
			s.Spec.ClusterIPs = s.Spec.ClusterIPs[:1]
		}, &want{corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{primary}}},
		{"upgrade: RequireDualStack with both families given", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicyRequireDualStack
			s.Spec.IPFamilyPolicy = &p
			s.Spec.IPFamilies = []corev1.IPFamily{primary, secondary}
		}, &want{corev1.IPFamilyPolicyRequireDualStack, []corev1.IPFamily{primary, secondary}}},
		{"downgrade: SingleStack only, families and IPs left as they were", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicySingleStack
			s.Spec.IPFamilyPolicy = &p
		}, nil},
		{"change the primary family (immutable)", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicyPreferDualStack
			s.Spec.IPFamilyPolicy = &p
			s.Spec.IPFamilies = []corev1.IPFamily{secondary, primary}
		}, nil},
		{"upgrade: PreferDualStack, drop ipFamilies", func(s *corev1.Service) {
			p := corev1.IPFamilyPolicyPreferDualStack
			s.Spec.IPFamilyPolicy = &p
			s.Spec.IPFamilies = nil
		}, nil},
	}

	plainNS := newNamespace(t, withoutWebhook, "update-plain", nil, nil)
	hookNS := newNamespace(t, withWebhook, "update-hook", nil, nil)
	nss := []string{plainNS, hookNS}
	primaryIP := map[string]string{}
	for _, ns := range nss {
		got := mustCreate(t, ns, svc("upd"))
		checkShape(t, got, want{corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{primary}})
		primaryIP[ns] = got.Spec.ClusterIPs[0]
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var outs []framework.Outcome
			for _, ns := range nss {
				cur := get(t, ns, "upd")
				st.mutate(cur)
				updated, err := client(t).CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{})
				outs = append(outs, framework.OutcomeOf(updated, err))
				if err != nil {
					t.Logf("%s: %v", ns, err)
					continue
				}
				stored := get(t, ns, "upd")
				if stored.Spec.ClusterIPs[0] != primaryIP[ns] {
					t.Errorf("%s: primary clusterIP changed from %s to %s", ns, primaryIP[ns], stored.Spec.ClusterIPs[0])
				}
				if st.want != nil {
					checkShape(t, stored, *st.want)
				}
			}
			// Each path allocated its own addresses: compare errors by family.
			for _, d := range framework.Diff(framework.MaskIPs(outs[0]), framework.MaskIPs(outs[1])) {
				t.Errorf("webhook path differs from the apiserver: %s", d)
			}
			if st.want != nil && outs[0].Error != nil {
				t.Errorf("apiserver rejected a step expected to pass: %s", outs[0].Error.Message)
			}
		})
	}
}
