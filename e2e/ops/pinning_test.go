package ops

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

// TestWithPinningWebhook runs single-to-dual and then replace-primary with
// the pinning webhook registered for the Services' namespace: the webhook
// pins the secondaries single-to-dual asks for from the pool apply extended,
// accepts the re-created Services' addresses at the same offsets in the new
// pool, keeps their (sticky) secondaries, and the reservations of the old
// addresses are freed, as status shows.
func TestWithPinningWebhook(t *testing.T) {
	c := newCluster(t, "pinning", framework.DualStackCIDRs, true)
	if _, _, err := c.env.StartWebhook(c.ctx, "ops", framework.WebhookOptions{
		Namespace: webhookNS,
		ExtraArgs: []string{"--reconcile-interval", "1s", "--retention", "10m", "--pending-grace", "3s"},
	}); err != nil {
		t.Fatal(err)
	}
	ns := c.namespace("pin", map[string]string{framework.ScopeLabel: "ops"})
	names := []string{"s1", "s2", "s3"}
	v4 := map[string]string{}
	for _, n := range names {
		s := c.service(ns, n, corev1.IPFamilyPolicySingleStack, fv4)
		if !inPrefix("10.96.0.1/32", s.Spec.ClusterIP) && !inPrefix("10.96.0.0/23", s.Spec.ClusterIP) {
			t.Fatalf("%s not pinned from the static band: %s", n, s.Spec.ClusterIP)
		}
		v4[n] = s.Spec.ClusterIP
	}

	sel := framework.ScopeLabel + "=ops"
	c.run(false, "apply", "single-to-dual", "--cidr", "fd00:10:96::/108", "--namespace-selector", sel, "--confirm")
	v6 := map[string]string{}
	for _, n := range names {
		s := c.get(ns, n)
		if len(s.Spec.ClusterIPs) != 2 || s.Spec.ClusterIPs[0] != v4[n] || !inPrefix("fd00:10:96::/120", s.Spec.ClusterIPs[1]) {
			t.Errorf("%s after single-to-dual: %v (want %s + a static-band IPv6 pin)", n, s.Spec.ClusterIPs, v4[n])
			continue
		}
		v6[n] = s.Spec.ClusterIPs[1]
	}

	c.run(false, "apply", "replace-primary", "--cidr", "10.100.0.0/16", "--confirm")
	for _, n := range names {
		s := c.get(ns, n)
		want := []string{strings.Replace(v4[n], "10.96.", "10.100.", 1), v6[n]}
		if !slices.Equal(s.Spec.ClusterIPs, want) {
			t.Errorf("%s after replace-primary: %v, want %v", n, s.Spec.ClusterIPs, want)
		}
	}
	// The webhook's records: the new addresses bound in the new pool, the
	// secondaries still bound in the static band, nothing left of the old
	// IPv4 addresses.
	c.waitFor("reservations to settle", func() (bool, string) {
		out, _ := c.run(false, "status", "-o", "json")
		var st ops.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, err.Error()
		}
		got := map[string]ops.FamilyStatus{}
		for _, p := range st.Pools {
			for _, f := range p.Families {
				got[p.Name+"/"+f.Family] = f
			}
		}
		np, sb6, sb4 := got["primary-10-100-0-0-16/IPv4"], got[alloc.StaticBandPool+"/IPv6"], got[alloc.StaticBandPool+"/IPv4"]
		summary := fmt.Sprintf("new pool %+v; static-band IPv6 %+v; static-band IPv4 %+v", np, sb6, sb4)
		return np.Bound == len(names) && np.Reserved == len(names) && sb6.Bound >= len(names) && sb4.Reserved-sb4.Bound <= 0 && sb4.Reserved <= 1, summary
	})
}
