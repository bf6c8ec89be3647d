package admissionpolicy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/grid"
)

// need skips (or fails, under E2E_REQUIRED) before any cluster starts.
func need(t testing.TB) {
	t.Helper()
	framework.NeedPrereq(t, framework.PrereqOwnControlPlane("the proof needs control planes of four shapes: local only"))
	if _, err := framework.WebhookBinary(); err != nil {
		framework.NeedPrereq(t, fmt.Errorf("%w: %v", framework.ErrPrereq, err))
	}
}

// workers bounds the dry-run creates in flight per cluster (the work is
// latency-bound; four clusters run side by side on a small machine).
const workers = 6

// pair is one request sent on both paths.
type pair struct {
	cfg  config
	cell grid.Cell
}

// compare sends every pair as a server-side dry run to the policy namespace
// and the webhook namespace of its config and returns the differences, one
// line per pair that differs, and how many pairs the configured default
// changed (the stored policy differs from the apiserver's own answer).
func (s *shape) compare(ctx context.Context, pairs []pair, policyNS func(config) string) (diffs []string, defaulted map[string]int) {
	defaulted = map[string]int{}
	var mu sync.Mutex
	work := make(chan pair)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				pol := s.dryRun(ctx, policyNS(p.cfg), p.cell.Input.Service())
				wh := s.dryRun(ctx, s.webhookNS[p.cfg.name], p.cell.Input.Service())
				d := framework.Diff(pol, wh)
				if pol.Error == nil && wh.Error == nil && pol.ClusterIPCount != wh.ClusterIPCount {
					d = append(d, fmt.Sprintf("clusterIPs: policy %d, webhook %d", pol.ClusterIPCount, wh.ClusterIPCount))
				}
				mu.Lock()
				for _, x := range d {
					diffs = append(diffs, fmt.Sprintf("%s/%s/%s: %s", s.cluster.Name, p.cfg.name, p.cell.Name, strings.ReplaceAll(x, "apiserver", "policy")))
				}
				if p.cell.Input.IPFamilyPolicy == nil && pol.Error == nil && pol.IPFamilyPolicy != "SingleStack" &&
					!(p.cell.Input.ClusterIP == "None" && !p.cell.Input.Selector) {
					defaulted[p.cfg.name]++
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range pairs {
		work <- p
	}
	close(work)
	wg.Wait()
	return diffs, defaulted
}

func cellsOf(cfgs ...config) []pair {
	var out []pair
	for _, cfg := range cfgs {
		for _, cell := range grid.CreateCells() {
			out = append(out, pair{cfg, cell})
		}
	}
	return out
}

// TestPolicyMatchesWebhook is the proof: on each cluster shape, for every
// grid cell and every config, the policy path and the webhook path store the
// same Service or give the same error. Then each of the mutations below must
// be noticed by the same comparison.
func TestPolicyMatchesWebhook(t *testing.T) {
	need(t)
	start := time.Now()
	var mu sync.Mutex
	total := 0
	t.Run("clusters", func(t *testing.T) {
		for _, cl := range grid.Clusters {
			t.Run(cl.Name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				s := startShape(t, ctx, cl)
				pairs := cellsOf(configs...)
				diffs, defaulted := s.compare(ctx, pairs, func(c config) string { return s.policyNS[c.name] })
				for _, d := range diffs {
					t.Error(d)
				}
				// Not vacuous: on every shape the PreferDualStack default
				// (flag, annotation, and the flag behind an invalid
				// annotation) gives plain Services PreferDualStack.
				for _, c := range []string{"flag=PreferDualStack", "annotation=PreferDualStack", "flag=PreferDualStack/annotation=invalid"} {
					if defaulted[c] == 0 {
						t.Errorf("%s/%s: no cell got the default; the configuration did not reach the Services", cl.Name, c)
					}
				}
				t.Logf("%s: cells given a default other than SingleStack per config: %v", cl.Name, defaulted)
				mu.Lock()
				total += len(pairs)
				mu.Unlock()
				t.Run("dry-run", func(t *testing.T) { s.checkDryRun(t, ctx) })
				t.Run("mutations", func(t *testing.T) { s.checkMutations(t, ctx) })
				if cl.Name == "v4v6" {
					t.Run("skip", func(t *testing.T) { s.checkSkips(t, ctx) })
				}
			})
		}
	})
	t.Logf("policy vs webhook: %d requests on each path over %d cluster shapes, %d configs (%s)",
		total, len(grid.Clusters), len(configs), time.Since(start).Round(time.Millisecond))
}

// checkDryRun: the proof relies on dry runs, so a real create of a plain
// Service in each config's policy namespace must store what the dry run said.
func (s *shape) checkDryRun(t *testing.T, ctx context.Context) {
	for _, cfg := range configs {
		ns := s.policyNS[cfg.name]
		dry := s.dryRun(ctx, ns, plainService("real"))
		got, err := s.c.CoreV1().Services(ns).Create(ctx, plainService("real"), metav1.CreateOptions{})
		real := framework.OutcomeOf(got, err)
		if d := framework.Diff(real, dry); len(d) > 0 || (real.Error == nil) != (dry.Error == nil) {
			t.Errorf("%s: dry run %+v, create %+v: %v", cfg.name, dry, real, d)
		}
		if err == nil {
			if err := s.c.CoreV1().Services(ns).Delete(ctx, "real", metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		}
	}
}

// mutation breaks one CEL expression of the rendered policy.
type mutation struct {
	name    string
	cluster string // the shape it is checked on
	cfg     string // the config whose cells and webhook it is compared with
	mutate  func(p *admissionregistrationv1.MutatingAdmissionPolicy) error
	// loaded tells when the mutated policy is in force (probe: a plain
	// Service in its namespace).
	loaded func(framework.Outcome) bool
}

func setCondition(name, expr string) func(*admissionregistrationv1.MutatingAdmissionPolicy) error {
	return func(p *admissionregistrationv1.MutatingAdmissionPolicy) error {
		for i := range p.Spec.MatchConditions {
			if p.Spec.MatchConditions[i].Name == name {
				p.Spec.MatchConditions[i].Expression = expr
				return nil
			}
		}
		return fmt.Errorf("no matchCondition %q", name)
	}
}

func setVariable(name, expr string) func(*admissionregistrationv1.MutatingAdmissionPolicy) error {
	return func(p *admissionregistrationv1.MutatingAdmissionPolicy) error {
		for i := range p.Spec.Variables {
			if p.Spec.Variables[i].Name == name {
				p.Spec.Variables[i].Expression = expr
				return nil
			}
		}
		return fmt.Errorf("no variable %q", name)
	}
}

func policyIs(p string) func(framework.Outcome) bool {
	return func(o framework.Outcome) bool { return o.Error == nil && o.IPFamilyPolicy == p }
}

var mutations = []mutation{
	{"selectorless headless Services defaulted too", "v4v6", "flag=PreferDualStack",
		setCondition("not-selectorless-headless", "true"), policyIs("PreferDualStack")},
	{"own ipFamilyPolicy overwritten", "v4v6", "flag=PreferDualStack",
		setCondition("policy-unset", "true"), policyIs("PreferDualStack")},
	{"Namespace annotation ignored", "v6v4", "flag=RequireDualStack/annotation=SingleStack",
		setVariable("wanted", "'RequireDualStack'"), policyIs("RequireDualStack")},
	{"invalid annotation used as is", "v4v6", "flag=PreferDualStack/annotation=invalid",
		setVariable("wanted", "variables.annotation != '' ? variables.annotation : 'PreferDualStack'"),
		func(o framework.Outcome) bool { return o.Error != nil }},
	{"single-stack cluster taken for dual-stack", "v4", "flag=RequireDualStack",
		setVariable("dualStackCluster", "true"), func(o framework.Outcome) bool { return o.Error != nil }},
	{"dual-stack cluster taken for single-stack", "v6v4", "flag=RequireDualStack",
		setVariable("dualStackCluster", "false"), policyIs("SingleStack")},
}

// checkMutations installs each mutation of this shape as its own policy and
// requires the comparison with the webhook to find a difference.
func (s *shape) checkMutations(t *testing.T, ctx context.Context) {
	for i, m := range mutations {
		if m.cluster != s.cluster.Name {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			var cfg config
			for _, c := range configs {
				if c.name == m.cfg {
					cfg = c
				}
			}
			scope := fmt.Sprintf("mut-%d", i)
			p, b := renderFor(t, cfg.flag, scope)
			if err := m.mutate(p); err != nil {
				t.Fatal(err)
			}
			if err := installPolicy(ctx, s.c, p, b); err != nil {
				t.Fatal(err)
			}
			var ann map[string]string
			if cfg.annotation != "" {
				ann = map[string]string{framework.PolicyAnnotation: cfg.annotation}
			}
			ns := s.namespace(t, ctx, scope, scope, nil, ann)
			s.waitFor(t, ctx, ns, "mutated policy "+m.name, m.loaded)
			diffs, _ := s.compare(ctx, cellsOf(cfg), func(config) string { return ns })
			if len(diffs) == 0 {
				t.Fatalf("the comparison did not notice the mutation %q", m.name)
			}
			t.Logf("noticed: %d cells differ, e.g. %s", len(diffs), diffs[0])
		})
	}
}

// checkSkips: the skip label on a Namespace or a Service (any value but
// "false"), and ExternalName Services, are left alone on both paths.
func (s *shape) checkSkips(t *testing.T, ctx context.Context) {
	const flag = "PreferDualStack"
	for _, v := range []string{"true", "", "yes", "false"} {
		want := "SingleStack"
		if v == "false" {
			want = flag
		}
		skip := map[string]string{framework.SkipLabel: v}
		// A fresh Namespace: poll, as for every newly configured scope,
		// rather than trust the first answer.
		polNS := s.namespace(t, ctx, "skip", policyScope(flag), skip, nil)
		s.waitFor(t, ctx, polNS, fmt.Sprintf("policy with Namespace label %s=%q", framework.SkipLabel, v), policyIs(want))
		wh := s.dryRun(ctx, s.namespace(t, ctx, "skip", webhookScope(flag), skip, nil), plainService("skip"))
		if wh.IPFamilyPolicy != want || wh.Error != nil {
			t.Errorf("Namespace label %s=%q: want %s, webhook %+v", framework.SkipLabel, v, want, wh)
		}
		sv := func() *corev1.Service {
			sv := plainService("skip")
			sv.Labels = skip
			return sv
		}
		pol := s.dryRun(ctx, s.policyNS["flag="+flag], sv())
		wh = s.dryRun(ctx, s.webhookNS["flag="+flag], sv())
		if pol.IPFamilyPolicy != want || wh.IPFamilyPolicy != want || pol.Error != nil || wh.Error != nil {
			t.Errorf("Service label %s=%q: want %s on both paths, policy %+v webhook %+v", framework.SkipLabel, v, want, pol, wh)
		}
	}
	ext := func() *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}
	}
	for _, cfg := range []string{"flag=PreferDualStack", "annotation=RequireDualStack"} {
		pol := s.dryRun(ctx, s.policyNS[cfg], ext())
		wh := s.dryRun(ctx, s.webhookNS[cfg], ext())
		if pol.Error != nil || wh.Error != nil || pol.IPFamilyPolicy != "" || wh.IPFamilyPolicy != "" {
			t.Errorf("%s: ExternalName must stay without a policy: policy %+v webhook %+v", cfg, pol, wh)
		}
	}
}
