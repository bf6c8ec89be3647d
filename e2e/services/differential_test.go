package services

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// diffCase is one Service spec of the differential table.
type diffCase struct {
	policy   string   // "" = unset
	families []string // nil = unset
	ips      string   // shape of the given clusterIPs, see clusterIPShapes
}

func (c diffCase) String() string {
	p := c.policy
	if p == "" {
		p = "unset"
	}
	f := "unset"
	if c.families != nil {
		f = "[" + strings.Join(c.families, ",") + "]"
	}
	return fmt.Sprintf("policy=%s/families=%s/clusterIPs=%s", p, f, c.ips)
}

var (
	diffPolicies = []string{"", "SingleStack", "PreferDualStack", "RequireDualStack"}
	diffFamilies = [][]string{nil, {"IPv4"}, {"IPv6"}, {"IPv4", "IPv6"}, {"IPv6", "IPv4"}}
	// clusterIPShapes: none; one address of a family; both in either order;
	// headless with and without a selector.
	clusterIPShapes = []string{"none", "v4", "v6", "v4+v6", "v6+v4", "None+selector", "None-selector"}
)

// build renders the case; n makes its pinned addresses distinct.
func (c diffCase) build(t *testing.T, n uint64) *corev1.Service {
	sv := svc("diff")
	if c.policy != "" {
		framework.WithPolicy(corev1.IPFamilyPolicy(c.policy))(sv)
	}
	for _, f := range c.families {
		sv.Spec.IPFamilies = append(sv.Spec.IPFamilies, corev1.IPFamily(f))
	}
	v4 := func() string { return pinnedIP(t, corev1.IPv4Protocol, n) }
	v6 := func() string { return pinnedIP(t, corev1.IPv6Protocol, n) }
	switch c.ips {
	case "v4":
		framework.WithClusterIPs(v4())(sv)
	case "v6":
		framework.WithClusterIPs(v6())(sv)
	case "v4+v6":
		framework.WithClusterIPs(v4(), v6())(sv)
	case "v6+v4":
		framework.WithClusterIPs(v6(), v4())(sv)
	case "None+selector":
		framework.WithClusterIPs(corev1.ClusterIPNone)(sv)
	case "None-selector":
		framework.WithClusterIPs(corev1.ClusterIPNone)(sv)
		sv.Spec.Selector = nil
	}
	return sv
}

// TestDifferential creates every combination of policy × ipFamilies × given
// clusterIPs once with the webhook and once without it: the stored
// ipFamilyPolicy, ipFamilies and clusterIP families, or the error, must be the
// same. The webhook's one job on these is to be indistinguishable from the
// apiserver (its extras — default policy, pinning — are tested elsewhere).
func TestDifferential(t *testing.T) {
	env := need(t)
	ctx := context.Background()
	plainNS := newNamespace(t, withoutWebhook, "diff-plain", nil, nil)
	hookNS := newNamespace(t, withWebhook, "diff-hook", nil, nil)

	var cases []diffCase
	for _, p := range diffPolicies {
		for _, f := range diffFamilies {
			for _, ips := range clusterIPShapes {
				cases = append(cases, diffCase{policy: p, families: f, ips: ips})
			}
		}
	}
	var same, differ, bothOK, bothErr int
	for i, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			var outs [2]framework.Outcome
			for j, ns := range []string{plainNS, hookNS} {
				// Distinct addresses per path: re-using one right after its
				// delete races the webhook's informer (see TestRecreateAfterDelete);
				// errors quoting them are compared by family.
				got, err := env.Client.CoreV1().Services(ns).Create(ctx, c.build(t, uint64(2*i+j)), metav1.CreateOptions{})
				outs[j] = framework.MaskIPs(framework.OutcomeOf(got, err))
				if err == nil {
					// Free the addresses at once: later cases must not collide
					// with this one's, on either path.
					if err := env.Client.CoreV1().Services(ns).Delete(ctx, "diff", metav1.DeleteOptions{}); err != nil {
						t.Fatalf("delete %s/diff: %v", ns, err)
					}
				}
			}
			d := framework.Diff(outs[0], outs[1])
			if len(d) > 0 {
				differ++
				for _, line := range d {
					t.Error(line)
				}
				return
			}
			same++
			if outs[0].Error == nil {
				bothOK++
			} else {
				bothErr++
			}
		})
	}
	summary := fmt.Sprintf("differential: %d cases on %v: %d identical (%d admitted, %d rejected on both paths), %d differences",
		len(cases), env.ServiceCIDRs, same, bothOK, bothErr, differ)
	t.Log(summary)
	fmt.Println(summary) // visible without -v: CI logs show the count
	if same+differ != len(cases) {
		t.Errorf("ran %d of %d cases", same+differ, len(cases))
	}
}
