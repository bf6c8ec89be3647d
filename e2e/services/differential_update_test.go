package services

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/grid"
)

// TestDifferentialUpdate is the UPDATE half of the differential test: every
// starting point of the update grid (single, single of the secondary family,
// PreferDualStack, RequireDualStack, headless with/without selector) PUT back
// with every change of policy × ipFamilies × clusterIPs (90), once with the
// webhook and once without. The answers must match (errors compared with
// addresses masked to their family, since secondaries are allocated).
func TestDifferentialUpdate(t *testing.T) {
	env := need(t)
	ctx := context.Background()
	plainNS := newNamespace(t, withoutWebhook, "diffupd-plain", nil, nil)
	hookNS := newNamespace(t, withWebhook, "diffupd-hook", nil, nil)

	var total, same, differ, bothOK, bothErr int
	n := uint64(0)
	for _, from := range grid.UpdateFroms {
		for _, ch := range grid.UpdateChanges() {
			n += 2
			if _, ok := grid.InitialInput(from, env.ServiceCIDRs, n); !ok {
				continue
			}
			total++
			name := "from=" + from + "/" + ch.String()
			var outs [2]framework.Outcome
			for j, ns := range []string{plainNS, hookNS} {
				svcs := env.Client.CoreV1().Services(ns)
				// Distinct addresses per path (see TestDifferential).
				initial, _ := grid.InitialInput(from, env.ServiceCIDRs, n+uint64(j))
				created, err := svcs.Create(ctx, initial.Service(), metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("%s: create the starting point in %s: %v", name, ns, err)
				}
				ch.Apply(created)
				got, err := svcs.Update(ctx, created, metav1.UpdateOptions{})
				outs[j] = framework.MaskIPs(framework.OutcomeOf(got, err))
				if err := svcs.Delete(ctx, "grid", metav1.DeleteOptions{}); err != nil {
					t.Fatalf("%s: delete in %s: %v", name, ns, err)
				}
			}
			if d := framework.Diff(outs[0], outs[1]); len(d) > 0 {
				differ++
				for _, line := range d {
					t.Errorf("%s: %s", name, line)
				}
				continue
			}
			same++
			if outs[0].Error == nil {
				bothOK++
			} else {
				bothErr++
			}
		}
	}
	summary := fmt.Sprintf("differential update: %d PUTs on %v: %d identical (%d admitted, %d rejected on both paths), %d differences",
		total, env.ServiceCIDRs, same, bothOK, bothErr, differ)
	t.Log(summary)
	fmt.Println(summary)
	if total == 0 {
		t.Error("no update case ran")
	}
}
