package admissionpolicy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/grid"
)

// BenchmarkDefaulting: Service creates (real, stored, with a selector) on a
// dual-stack apiserver with no defaulting, with the PreferDualStack policy,
// and with the PreferDualStack defaulting webhook (/default, registered like
// the chart: fail-open, 5 s), at 1 and 8 concurrent clients. Every mode
// stores the same Service (PreferDualStack, two clusterIPs): with no
// defaulting the client sets the policy itself, so the figures compare the
// defaulting mechanisms, not one IP against two. Figures: creates/s, p50 and p99 latency, and
// x-none, the rate relative to no defaulting at the same concurrency in the
// same run. `make bench-defaulting`; docs/defaulting-policy.md has figures.
func BenchmarkDefaulting(b *testing.B) {
	need(b)
	ctx := context.Background()
	cl := grid.Clusters[2] // v4v6
	env, err := framework.NewLocalEnv(ctx, "bench-defaulting", framework.ControlPlaneOptions{ServiceCIDRs: cl.CIDRs})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.Close(b.Failed()) })
	s := &shape{cluster: cl, env: env, c: quietClient(b, env)}
	bin, err := framework.WebhookBinary()
	if err != nil {
		b.Fatal(err)
	}
	const flag = "PreferDualStack"
	w, err := framework.StartWebhook(ctx, framework.WebhookOptions{
		Binary: bin, Name: webhookScope(flag), Dir: env.Artifacts, Kubeconfig: env.Kubeconfig,
		DefaultIPFamilyPolicy: flag, ExtraArgs: []string{"--pinning=false", "--shutdown-delay=0s", "--log-level=warn"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.Stop() })
	if err := registerDefault(ctx, s.c, webhookScope(flag), w); err != nil {
		b.Fatal(err)
	}
	// As the chart registers it: fail-open, 5 s.
	mwc, err := s.c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "dsw-"+webhookScope(flag), metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ignore := admissionregistrationv1.Ignore
	five := int32(5)
	mwc.Webhooks[0].FailurePolicy, mwc.Webhooks[0].TimeoutSeconds = &ignore, &five
	if _, err := s.c.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	p, bind := renderFor(b, flag, policyScope(flag))
	if err := installPolicy(ctx, s.c, p, bind); err != nil {
		b.Fatal(err)
	}
	nsOf := map[string]string{
		"none":    s.namespace(b, ctx, "none", "none", nil, nil),
		"policy":  s.namespace(b, ctx, policyScope(flag), policyScope(flag), nil, nil),
		"webhook": s.namespace(b, ctx, webhookScope(flag), webhookScope(flag), nil, nil),
	}
	s.waitFor(b, ctx, nsOf["policy"], "policy", policyIs(flag))
	s.waitFor(b, ctx, nsOf["webhook"], "webhook", policyIs(flag))

	base := map[int]float64{}
	for _, clients := range []int{1, 8} {
		for _, mode := range []string{"none", "policy", "webhook"} {
			b.Run(fmt.Sprintf("%s/clients=%d", mode, clients), func(b *testing.B) {
				rate := creates(b, ctx, s, nsOf[mode], clients, mode == "none")
				if mode == "none" {
					base[clients] = rate
				} else if base[clients] > 0 {
					b.ReportMetric(rate/base[clients], "x-none")
				}
			})
		}
	}
}

// creates stores b.N Services from n clients (PreferDualStack set by the
// client when clientSets, else left to the defaulting), checks each is
// PreferDualStack, and reports creates/s and latencies.
func creates(b *testing.B, ctx context.Context, s *shape, ns string, n int, clientSets bool) float64 {
	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range n {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				sv := plainService("")
				sv.GenerateName = "bench-"
				if clientSets {
					framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)(sv)
				}
				t0 := time.Now()
				got, err := s.c.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{})
				d := time.Since(t0)
				if err == nil && (got.Spec.IPFamilyPolicy == nil || *got.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack) {
					err = fmt.Errorf("Service %s stored without PreferDualStack: %v", got.Name, got.Spec.IPFamilyPolicy)
				}
				if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "creates/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	return rate
}
