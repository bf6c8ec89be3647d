package pinning

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// benchDoc: the default pool "bulk" (strategy lowest, as without a pools
// ConfigMap) and a pool "hashed" (strategy hash) for namespaces labelled
// e2e-pool=hashed, each bigger than the creates of the run.
var benchDoc = bulkDoc + `- name: hashed
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
// pool (lowest) and from a hash pool. It reports the ratios (goals for
// lowest: creates/s ≥ 1.0×, /mutate p99 ≤ 0.25× and p50 ≤ 0.2× the
// unserved create p99/p50), the client-side create latency, the admission
// latency (/mutate, /validate) as timed by the proxy and as the webhooks'
// own histogram dualstack_webhook_http_request_duration_seconds says, the
// CPU time kube-apiserver, etcd and the webhooks spend per create during the
// rounds, and, in a phase of its own, the replicas' CPU per create (goal ≤
// 0.5 ms). After the run the checker of TestReplicas counts duplicates and
// leaks. Figures go to the test log and
// e2e/_artifacts/pinning-bench-<time>.txt, ending with the
// "bench-pinning: key=value …" line `make bench-pinning` prints.
func TestPinningBenchmark(t *testing.T) {
	if os.Getenv(EnvBench) == "" {
		t.Skipf("a measurement, not a test: set %s=1 (make bench)", EnvBench)
	}
	const (
		rounds  = 8
		perSide = 75
		workers = 16
	)
	// The chart's reconcile interval (the suite's 1 s would charge a full
	// resync a second to the replicas), and profiles on for EnvBenchProfile.
	rs := startReplicas(t, "pinbench", 3, benchDoc, append([]string{"--reconcile-interval=30s", "--profiling"}, benchArgs...)...)
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
	var alreadyAllocated int
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
			alreadyAllocated += len(o.alreadyAllocated)
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
	apiBefore := readLatency(t, c, rs.Hooks)

	// Optional CPU profiles of every replica over the measured rounds.
	profiles := startProfiles(t, rs.Hooks, "")

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
	api := readLatency(t, c, rs.Hooks).sub(apiBefore)
	val := rs.Proxy.TakeLatencies("/validate")
	profileFiles := profiles()

	inPools := func(a netip.Addr) bool { return inBulk(a) || hashed4.contains(a) || hashed6.contains(a) }

	// Replica CPU per create, measured apart from the rounds (whose
	// reconciler tail spills into the next side): from a settled cluster,
	// a fixed number of creates on one side, then until the replicas have
	// settled again (every pin bound), minus what they burn idle over the
	// same time (Lease renewals).
	settle := func() {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			snap, err := framework.TakeSnapshot(ctx, c, replicasState)
			if err == nil && framework.Check(snap, inPools, true).Empty() {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(cpuQuiet)
	}
	settle()
	_, idle0 := pr.sample()
	idleStart := time.Now()
	time.Sleep(cpuIdleWindow)
	_, idle1 := pr.sample()
	idleRate := float64(idle1-idle0) / float64(time.Since(idleStart))
	cpuPerCreate := func(ns, prefix string) time.Duration {
		if ns == plainNS {
			// What the replicas spend on Services they never see an
			// admission request for (goal 2): its own profile.
			defer startProfiles(t, rs.Hooks, "unserved-")()
		}
		_, h0 := pr.sample()
		t0 := time.Now()
		for _, o := range run(c, single(prefix, ns, cpuCreates), workers, nil) {
			if o.err != nil {
				t.Fatalf("CPU phase: create %s/%s: %v", o.ns, o.job.svc.Name, o.err)
			}
			alreadyAllocated += len(o.alreadyAllocated)
		}
		settle()
		_, h1 := pr.sample()
		busy := float64(h1-h0) - idleRate*float64(time.Since(t0))
		return time.Duration(max(busy, 0) / cpuCreates)
	}
	cpuPlain := cpuPerCreate(plainNS, "cpu")
	cpuPinned := cpuPerCreate(lowestNS, "cpu")

	// Correctness of everything the run created: once the reconciler has bound
	// every pin, no address is held twice and no reservation is left
	// without its Service (pool addresses of the unserved namespace are
	// imported, as for any Service the webhook did not pin).
	var final framework.Findings
	settled := false
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		snap, err := framework.TakeSnapshot(ctx, c, replicasState)
		if err != nil {
			t.Fatal(err)
		}
		final = framework.Check(snap, inPools, true)
		if len(final.Duplicates) > 0 || final.Empty() {
			settled = final.Empty()
			break
		}
		time.Sleep(time.Second)
	}
	leaks := len(final.Orphans) + len(final.Unreserved) + len(final.Malformed)
	if !settled {
		t.Errorf("state after the run: %s", final)
	}

	rate := func(s *side) float64 { return float64(s.n) / s.elapsed.Seconds() }
	var b strings.Builder
	fmt.Fprintf(&b, "pinning benchmark %s: %d rounds x %d creates per side, %d concurrent clients, kube-apiserver v1.37.2 + etcd on loopback, %d CPUs, load %s\n",
		time.Now().UTC().Format(time.RFC3339), rounds, perSide, workers, runtimeCPUs(), framework.LoadAvg())
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
		fmt.Fprintf(&b, "ratio %s/no webhook: pooled %.2fx, per-round median %.2fx (min %.2fx, max %.2fx); goal >= 1.0x\n",
			s.name, rate(s)/rate(plain), rr[len(rr)/2], rr[0], rr[len(rr)-1])
	}
	fmt.Fprintf(&b, "/validate via proxy p50 %s p99 %s (n=%d)\n",
		framework.Percentile(val, 0.5).Round(100*time.Microsecond), framework.Percentile(val, 0.99).Round(100*time.Microsecond), len(val))
	for _, ep := range []string{"mutate", "validate"} {
		h := after[ep].Sub(before[ep])
		fmt.Fprintf(&b, "webhook histogram    %s: n=%d, p50 ~%s, p99 ~%s (buckets %v s)\n", ep, h.Count(),
			h.Quantile(0.5).Round(100*time.Microsecond), h.Quantile(0.99).Round(100*time.Microsecond), h.FiniteBounds())
	}
	// What /mutate waits for: its reservation's create, as the apiserver
	// itself timed it (the pinned sides' creates, and the reconciler's
	// imports of pool addresses the unserved side was given).
	fmt.Fprintf(&b, "apiserver's own ConfigMap create over the rounds: p50 ~%s, p99 ~%s (n=%d, buckets of 5, 25, 50, 100 ms ...); as the replicas timed it: p50 ~%s, p99 ~%s (n=%d)\n",
		api.cm.Quantile(0.5).Round(100*time.Microsecond), api.cm.Quantile(0.99).Round(100*time.Microsecond), api.cm.Count(),
		api.store.Quantile(0.5).Round(100*time.Microsecond), api.store.Quantile(0.99).Round(100*time.Microsecond), api.store.Count())
	served, failovers := rs.Proxy.Stats()
	fmt.Fprintf(&b, "requests per replica %v, failovers %d\n", served, failovers)
	for _, f := range profileFiles {
		fmt.Fprintf(&b, "CPU profile %s\n", f)
	}
	fmt.Fprintf(&b, "replica CPU per create (3 replicas together, %d creates from a settled cluster until settled again, idle %.1f ms/s subtracted): unserved namespace %s, pinned (lowest) %s\n",
		cpuCreates, idleRate*1000, cpuPlain.Round(10*time.Microsecond), cpuPinned.Round(10*time.Microsecond))
	fmt.Fprintf(&b, "after the run: %d duplicates, %d \"already allocated\", %d leaked or unbound reservations (%s)\n",
		len(final.Duplicates), alreadyAllocated, leaks, orNone(final.String()))
	// The summary line (docs/pinning-e2e.md): latency ratios against the
	// no-webhook create of the same run; replica CPU per create of the
	// unserved namespace (what every Service costs the replicas) and of the
	// lowest pool (what a pin costs them).
	mutate := pinned.mutate
	fmt.Fprintf(&b, "bench-pinning: mutate_p99_ratio=%.3f mutate_p50_ratio=%.3f throughput_ratio=%.2f replica_cpu_ms_per_create=%.2f duplicates=%d already_allocated=%d leaks=%d replica_cpu_ms_per_pinned_create=%.2f load=%s\n",
		framework.Percentile(mutate, 0.99).Seconds()/framework.Percentile(plain.lat, 0.99).Seconds(),
		framework.Percentile(mutate, 0.5).Seconds()/framework.Percentile(plain.lat, 0.5).Seconds(),
		rate(pinned)/rate(plain),
		float64(cpuPlain)/float64(time.Millisecond),
		len(final.Duplicates), alreadyAllocated, leaks,
		float64(cpuPinned)/float64(time.Millisecond),
		strings.ReplaceAll(framework.LoadAvg(), " ", "/"))
	t.Log("\n" + b.String())
	if root, err := framework.RepoRoot(); err == nil {
		dir := filepath.Join(root, "e2e", "_artifacts")
		p := filepath.Join(dir, "pinning-bench-"+time.Now().Format("20060102-150405")+".txt")
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err == nil {
			t.Logf("written to %s", p)
			// `make bench-pinning` prints this one.
			_ = os.WriteFile(filepath.Join(dir, "pinning-bench-latest.txt"), []byte(b.String()), 0o644)
		}
	}
}

// The CPU phase of TestPinningBenchmark: creates per side, and how long the
// replicas must stay quiet to count as settled.
const (
	cpuCreates = 1000
	cpuQuiet   = 3 * time.Second
	// cpuIdleWindow is one full resync period of the replicas
	// (--reconcile-interval=30s): over a shorter window the idle rate
	// swung 7–45 ms/s with whether the leader's resync fell inside it.
	cpuIdleWindow = 30 * time.Second
)

// EnvBenchProfile=<seconds> makes TestPinningBenchmark take a CPU profile of
// every replica over the first <seconds> of the measured rounds (the
// replicas then cost a little more; the figures are still printed).
const EnvBenchProfile = "E2E_PINNING_PROFILE"

// benchArgs are extra flags for the benchmark's replicas, from
// E2E_PINNING_ARGS (space-separated), to compare settings in one command.
var benchArgs = strings.Fields(os.Getenv("E2E_PINNING_ARGS"))

// hashed4 and hashed6 are benchDoc's hash pool.
var (
	hashed4 = addrRange{netip.MustParseAddr("10.96.32.0"), netip.MustParseAddr("10.96.47.255")}
	hashed6 = addrRange{netip.MustParseAddr("fd00:10:96::2000"), netip.MustParseAddr("fd00:10:96::2fff")}
)

// startProfiles starts a CPU profile of each replica (EnvBenchProfile set)
// and returns the function that waits for them and returns the files
// written (e2e/_artifacts/pinning-bench-<tag>replica-<i>.pprof).
func startProfiles(t *testing.T, hooks []*framework.Webhook, tag string) func() []string {
	if os.Getenv(EnvBenchProfile) == "" {
		return func() []string { return nil }
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	files := make([]string, len(hooks))
	for i, w := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.MetricsURL+"/debug/pprof/profile?seconds="+os.Getenv(EnvBenchProfile), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Logf("profile of replica %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Logf("profile of replica %d: %d %v", i, resp.StatusCode, err)
				return
			}
			p := filepath.Join(root, "e2e", "_artifacts", fmt.Sprintf("pinning-bench-%sreplica-%d.pprof", tag, i))
			if os.WriteFile(p, body, 0o644) == nil {
				files[i] = p
			}
		}()
	}
	return func() []string {
		wg.Wait()
		cancel()
		return slices.DeleteFunc(files, func(s string) bool { return s == "" })
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// scrapeHistograms sums dualstack_webhook_http_request_duration_seconds of
// /mutate and /validate over the running replicas' /metrics.
func scrapeHistograms(t *testing.T, hooks []*framework.Webhook) map[string]framework.Histogram {
	t.Helper()
	out := map[string]framework.Histogram{}
	for _, ep := range []string{"mutate", "validate"} {
		h, err := framework.WebhookHistogram(hooks, "dualstack_webhook_http_request_duration_seconds", map[string]string{"endpoint": ep})
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		out[ep] = h
	}
	return out
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
