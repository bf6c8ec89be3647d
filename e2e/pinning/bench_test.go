package pinning

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// benchDoc: the default pool "bulk" (strategy lowest, as without a pools
// ConfigMap) and a pool "hashed" (strategy hash) for namespaces labelled
// e2e-pool=hashed, each bigger than the creates of the run.
const benchDoc = bulkDoc + `- name: hashed
  strategy: hash
  namespaceSelector:
    matchLabels: {e2e-pool: hashed}
  addresses:
    ipv4: ["10.96.32.0/20"]
    ipv6: ["fd00:10:96::2000-fd00:10:96::2fff"]
`

// EnvBench turns TestPinningBenchmark on (`make bench` sets it). It is a
// measurement, not a pass/fail gate, so `make test` never runs it.
const EnvBench = "E2E_PINNING_BENCH"

// TestPinningBenchmark measures Service creates/s through the real apiserver
// with three pinning replicas behind the round-robin proxy against the same
// apiserver creating Services in a namespace no webhook serves, in the same
// run: rounds rotate which side goes first so that background load drifts
// hit every side. Pinned creates are measured from the default-strategy
// pool (lowest: every request races for the same address) and from a hash
// pool. It reports the ratio (goal ≥ 0.8×), the client-side create latency,
// and the admission latency of the pinning path (/mutate, /validate) as
// timed by the proxy and as the webhooks' own histogram
// dualstack_webhook_http_request_duration_seconds says, and the CPU time
// kube-apiserver, etcd and the webhooks spend per create (a ratio that does
// not depend on what else the machine runs). Figures go to the
// test log and e2e/_artifacts/pinning-bench-<time>.txt.
func TestPinningBenchmark(t *testing.T) {
	if os.Getenv(EnvBench) == "" {
		t.Skipf("a measurement, not a test: set %s=1 (make bench)", EnvBench)
	}
	const (
		rounds  = 8
		perSide = 75
		workers = 16
	)
	rs := startReplicas(t, "pinbench", 3, benchDoc)
	c := rs.Env.Client
	ctx := context.Background()
	plainNS, err := framework.Namespace(ctx, c, "plain", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lowestNS := scoped(t, c, rs.Scope, "lowest")
	hashNS, err := framework.Namespace(ctx, c, "hash", map[string]string{framework.ScopeLabel: rs.Scope, "e2e-pool": "hashed"}, nil)
	if err != nil {
		t.Fatal(err)
	}

	single := func(prefix string, ns string, n int) []job {
		jobs := make([]job, n)
		for i := range jobs {
			jobs[i] = job{ns: ns, svc: newService(fmt.Sprintf("%s-%d", prefix, i))}
		}
		return jobs
	}
	type side struct {
		name    string
		ns      string
		elapsed time.Duration
		n       int
		lat     []time.Duration
		retries int
		mutate  []time.Duration
		cpuCP   time.Duration // kube-apiserver + etcd
		cpuHook time.Duration // the webhook replicas
	}
	pr, err := findProcs(rs.Env, rs.Hooks)
	if err != nil {
		t.Fatalf("find the processes to charge CPU to: %v", err)
	}
	plain := &side{name: "no webhook", ns: plainNS}
	pinned := &side{name: "pinned (lowest)", ns: lowestNS}
	hashed := &side{name: "pinned (hash)", ns: hashNS}
	sides := []*side{plain, pinned, hashed}
	measure := func(s *side, prefix string, n int, record bool) {
		rs.Proxy.TakeLatencies("/mutate")
		cp0, hk0 := pr.sample()
		start := time.Now()
		outs := run(c, single(prefix, s.ns, n), workers, nil)
		el := time.Since(start)
		cp1, hk1 := pr.sample()
		mut := rs.Proxy.TakeLatencies("/mutate")
		for _, o := range outs {
			if o.err != nil {
				t.Fatalf("%s: create %s/%s: %v", s.name, o.ns, o.job.svc.Name, o.err)
			}
			if record {
				s.lat = append(s.lat, o.latency)
				s.retries += o.attempts - 1
			}
		}
		if record {
			s.elapsed += el
			s.n += n
			s.mutate = append(s.mutate, mut...)
			s.cpuCP += cp1 - cp0
			s.cpuHook += hk1 - hk0
		}
	}
	// Warm up every path (connections, caches), then discard.
	for _, s := range sides {
		measure(s, "warm", 20, false)
	}
	rs.Proxy.TakeLatencies("/validate")
	before := scrapeHistograms(t, rs.Hooks)

	var perRound []string
	roundRatios := map[*side][]float64{}
	for r := range rounds {
		var rates []string
		rate := map[*side]float64{}
		for k := range sides {
			s := sides[(r+k)%len(sides)] // rotate who goes first
			e0, n0 := s.elapsed, s.n
			measure(s, fmt.Sprintf("r%d", r), perSide, true)
			rate[s] = float64(s.n-n0) / (s.elapsed - e0).Seconds()
			rates = append(rates, fmt.Sprintf("%s %.0f/s", s.name, rate[s]))
		}
		for _, s := range sides[1:] {
			roundRatios[s] = append(roundRatios[s], rate[s]/rate[plain])
		}
		perRound = append(perRound, fmt.Sprintf("round %d: %s", r+1, strings.Join(rates, ", ")))
	}
	after := scrapeHistograms(t, rs.Hooks)
	val := rs.Proxy.TakeLatencies("/validate")

	rate := func(s *side) float64 { return float64(s.n) / s.elapsed.Seconds() }
	var b strings.Builder
	fmt.Fprintf(&b, "pinning benchmark %s: %d rounds x %d creates per side, %d concurrent clients, kube-apiserver v1.37.2 + etcd on loopback, %d CPUs, load %s\n",
		time.Now().UTC().Format(time.RFC3339), rounds, perSide, workers, runtimeCPUs(), loadAvg())
	for _, l := range perRound {
		fmt.Fprintln(&b, "  "+l)
	}
	for _, s := range sides {
		fmt.Fprintf(&b, "%-16s %6.1f creates/s (%.2fx)  create p50 %s p99 %s  retries %d", s.name, rate(s), rate(s)/rate(plain),
			framework.Percentile(s.lat, 0.5).Round(100*time.Microsecond), framework.Percentile(s.lat, 0.99).Round(100*time.Microsecond), s.retries)
		if len(s.mutate) > 0 {
			fmt.Fprintf(&b, "  /mutate via proxy p50 %s p99 %s (n=%d)", framework.Percentile(s.mutate, 0.5).Round(100*time.Microsecond),
				framework.Percentile(s.mutate, 0.99).Round(100*time.Microsecond), len(s.mutate))
		}
		fmt.Fprintln(&b)
	}
	perCreate := func(d time.Duration, s *side) time.Duration { return d / time.Duration(s.n) }
	for _, s := range sides {
		fmt.Fprintf(&b, "%-16s CPU per create: kube-apiserver+etcd %s, webhooks %s, total %s\n", s.name,
			perCreate(s.cpuCP, s).Round(10*time.Microsecond), perCreate(s.cpuHook, s).Round(10*time.Microsecond),
			perCreate(s.cpuCP+s.cpuHook, s).Round(10*time.Microsecond))
	}
	// Two baselines: the no-webhook side with the replicas' own CPU (they
	// watch every Service, served or not) and without it (a cluster where
	// the webhook is not deployed at all).
	for _, s := range sides[1:] {
		pinnedPerCPU := float64(s.n) / (s.cpuCP + s.cpuHook).Seconds()
		fmt.Fprintf(&b, "CPU-capacity ratio %s: %.2fx of the no-webhook namespace, %.2fx of a cluster without the webhook deployed (creates per CPU-second)\n",
			s.name, pinnedPerCPU/(float64(plain.n)/(plain.cpuCP+plain.cpuHook).Seconds()), pinnedPerCPU/(float64(plain.n)/plain.cpuCP.Seconds()))
	}
	for _, s := range sides[1:] {
		rr := roundRatios[s]
		sort.Float64s(rr)
		fmt.Fprintf(&b, "ratio %s/no webhook: pooled %.2fx, per-round median %.2fx (min %.2fx, max %.2fx); goal >= 0.80x\n",
			s.name, rate(s)/rate(plain), rr[len(rr)/2], rr[0], rr[len(rr)-1])
	}
	fmt.Fprintf(&b, "/validate via proxy p50 %s p99 %s (n=%d)\n",
		framework.Percentile(val, 0.5).Round(100*time.Microsecond), framework.Percentile(val, 0.99).Round(100*time.Microsecond), len(val))
	for _, ep := range []string{"mutate", "validate"} {
		h := after[ep].minus(before[ep])
		fmt.Fprintf(&b, "webhook histogram    %s: n=%.0f, p50 ~%s, p99 ~%s (buckets %v s)\n", ep, h.count(),
			h.quantile(0.5).Round(100*time.Microsecond), h.quantile(0.99).Round(100*time.Microsecond), h.bounds())
	}
	served, failovers := rs.Proxy.Stats()
	fmt.Fprintf(&b, "requests per replica %v, failovers %d\n", served, failovers)
	t.Log("\n" + b.String())
	if root, err := framework.RepoRoot(); err == nil {
		p := filepath.Join(root, "e2e", "_artifacts", "pinning-bench-"+time.Now().Format("20060102-150405")+".txt")
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err == nil {
			t.Logf("written to %s", p)
		}
	}
}

// histogram is one endpoint's cumulative bucket counts summed over replicas.
type histogram map[float64]float64 // le → cumulative count (+Inf included)

func (h histogram) bounds() []float64 {
	var out []float64
	for le := range h {
		if !math.IsInf(le, 1) {
			out = append(out, le)
		}
	}
	sort.Float64s(out)
	return out
}

func (h histogram) count() float64 { return h[math.Inf(1)] }

func (h histogram) minus(o histogram) histogram {
	out := histogram{}
	for le, v := range h {
		out[le] = v - o[le]
	}
	return out
}

// quantile interpolates linearly inside the bucket holding rank q·count
// (what Prometheus' histogram_quantile does).
func (h histogram) quantile(q float64) time.Duration {
	total := h.count()
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for _, le := range append(h.bounds(), math.Inf(1)) {
		if h[le] >= rank {
			if math.IsInf(le, 1) {
				return time.Duration(lower * float64(time.Second))
			}
			frac := (rank - prev) / math.Max(h[le]-prev, 1e-9)
			return time.Duration((lower + (le-lower)*frac) * float64(time.Second))
		}
		lower, prev = le, h[le]
	}
	return 0
}

// scrapeHistograms sums dualstack_webhook_http_request_duration_seconds by
// endpoint over the running replicas' /metrics.
func scrapeHistograms(t *testing.T, hooks []*framework.Webhook) map[string]histogram {
	t.Helper()
	out := map[string]histogram{}
	const name = "dualstack_webhook_http_request_duration_seconds_bucket{"
	for _, w := range hooks {
		if !w.Running() {
			continue
		}
		code, body, err := w.Metrics()
		if err != nil || code != 200 {
			t.Fatalf("scrape %s: %d %v", w.MetricsURL, code, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, name) {
				continue
			}
			labels := line[len(name):strings.Index(line, "}")]
			var ep string
			le := math.NaN()
			for _, kv := range strings.Split(labels, ",") {
				k, v, _ := strings.Cut(kv, "=")
				v = strings.Trim(v, `"`)
				switch k {
				case "endpoint":
					ep = v
				case "le":
					le, _ = strconv.ParseFloat(v, 64) // "+Inf" parses as +Inf
				}
			}
			f := strings.Fields(line)
			val, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil || math.IsNaN(le) {
				continue
			}
			if out[ep] == nil {
				out[ep] = histogram{}
			}
			out[ep][le] += val
		}
	}
	return out
}

// TestHistogramQuantile checks the quantile arithmetic on a known histogram.
func TestHistogramQuantile(t *testing.T) {
	h := histogram{0.005: 50, 0.025: 90, 0.1: 100, math.Inf(1): 100}
	if got := h.quantile(0.5); got != 5*time.Millisecond {
		t.Errorf("p50 = %s, want 5ms", got)
	}
	if got := h.quantile(0.7); got != 15*time.Millisecond {
		t.Errorf("p70 = %s, want 15ms (halfway through the 5-25ms bucket)", got)
	}
	if got := h.quantile(0.99); got.Round(time.Millisecond) != 93*time.Millisecond {
		t.Errorf("p99 = %s, want 92.5ms", got)
	}
}

func runtimeCPUs() int {
	n := 0
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(data), "\nprocessor")
		if strings.HasPrefix(string(data), "processor") {
			n++
		}
	}
	return n
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
