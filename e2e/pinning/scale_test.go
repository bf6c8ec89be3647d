package pinning

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestScale's knobs. Without them it is the correctness run `make test`
// includes; `make bench-scale` sets both.
const (
	// EnvScaleServices: how many pinned Services TestScale creates
	// (default defaultScaleServices).
	EnvScaleServices = "E2E_SCALE_SERVICES"
	// EnvScaleBench adds the measurements (a baseline on the empty
	// cluster, Services created without the webhook for the throughput
	// ratio, replica restart, status, memory, profiles) and prints the
	// bench-scale table. Figures are printed, never asserted.
	EnvScaleBench = "E2E_SCALE_BENCH"
	// EnvScaleGoMemLimit is the replicas' GOMEMLIMIT (the chart derives
	// it from the container's memory limit: goMemLimitPercent, 85 %, of
	// it); empty runs them without.
	EnvScaleGoMemLimit = "E2E_SCALE_GOMEMLIMIT"

	defaultScaleServices = 2000
	scaleNamespaces      = 50
	scaleWorkers         = 16
)

// scaleDoc: three pools, each serving the namespaces labelled
// e2e-scale-pool=<a|b|c>, each far bigger than 20,000 Services need. No
// default pool: the namespace the no-webhook side uses is not served anyway.
// 10.96.255.255 is the ServiceCIDR's broadcast address, which a pool must
// exclude.
const scaleDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
pools:
- name: scale-a
  namespaceSelector:
    matchLabels: {e2e-scale-pool: a}
  addresses:
    ipv4: ["10.96.64.0/18"]
    ipv6: ["fd00:10:96::4:0/110"]
- name: scale-b
  namespaceSelector:
    matchLabels: {e2e-scale-pool: b}
  addresses:
    ipv4: ["10.96.128.0/18"]
    ipv6: ["fd00:10:96::8:0/110"]
- name: scale-c
  strategy: hash
  namespaceSelector:
    matchLabels: {e2e-scale-pool: c}
  addresses:
    ipv4: ["10.96.192.0/18"]
    ipv6: ["fd00:10:96::c:0/110"]
  exclude: ["10.96.255.255"]
`

var scalePools = []netip.Prefix{
	netip.MustParsePrefix("10.96.64.0/18"), netip.MustParsePrefix("10.96.128.0/18"), netip.MustParsePrefix("10.96.192.0/18"),
	netip.MustParsePrefix("fd00:10:96::4:0/110"), netip.MustParsePrefix("fd00:10:96::8:0/110"), netip.MustParsePrefix("fd00:10:96::c:0/110"),
}

func inScale(a netip.Addr) bool {
	for _, p := range scalePools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// scaleService is the i-th Service of the scale workload: a quarter
// RequireDualStack (both family orders), the rest the apiserver's default
// (SingleStack IPv4).
func scaleService(name string, i int) *corev1.Service {
	switch i % 8 {
	case 0:
		return newService(name, framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(v4, v6))
	case 4:
		return newService(name, framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(v6, v4))
	}
	return newService(name)
}

func scaleJobs(prefix string, from, n int, namespaces []string) []job {
	jobs := make([]job, 0, n)
	for i := from; i < from+n; i++ {
		jobs = append(jobs, job{ns: namespaces[i%len(namespaces)], svc: scaleService(fmt.Sprintf("%s-%d", prefix, i), i)})
	}
	return jobs
}

// TestScale pins many Services (default 2,000; E2E_SCALE_SERVICES) with
// three replicas, a quarter dual-stack, over 50 namespaces and 3 pools, then
// deletes every state ConfigMap while admissions go on, and checks after
// both: no address held twice, every pool address of a live Service
// reserved and bound to it, no reservation without its Service, and
// `dualstack-webhook status` counting every bound address. With
// E2E_SCALE_BENCH it also measures (never asserts) what docs/allocator.md
// reports: replica memory, restart readiness, rebuild and status time, and
// /mutate latency and create throughput against baselines of the same run.
func TestScale(t *testing.T) {
	n := defaultScaleServices
	if v := os.Getenv(EnvScaleServices); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("%s=%q: want a number >= 100", EnvScaleServices, v)
		}
	}
	bench := os.Getenv(EnvScaleBench) != ""
	// The shipped defaults for grace and resync: a 3s grace at this scale
	// would free the reservation of a create the apiserver is still
	// persisting.
	args := []string{"--leader-election=true", "--pending-grace", "2m", "--retention", "10m"}
	if bench {
		args = append(args, "--profiling")
	}
	var env []string
	memLimit := os.Getenv(EnvScaleGoMemLimit)
	if memLimit != "" {
		env = append(env, "GOMEMLIMIT="+memLimit)
	}
	framework.NeedPrereq(t, prereqErr)
	rs := framework.StartReplicaSet(t, framework.ReplicaSetOptions{
		Name: "scale", Replicas: 3, StateNS: replicasState, PoolsDoc: scaleDoc, Args: args, Env: env,
	})
	rs.Keep = bench // the profiles are the point
	c := rs.Env.Client
	ctx := context.Background()
	var namespaces []string
	for i := range scaleNamespaces {
		ns, err := framework.Namespace(ctx, c, fmt.Sprintf("scale%d", i),
			map[string]string{framework.ScopeLabel: rs.Scope, "e2e-scale-pool": string(rune('a' + i%3))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		namespaces = append(namespaces, ns)
	}
	plainNS, err := framework.Namespace(ctx, c, "scale-plain", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mem := startRSSSampler(t, rs)
	defer mem.stop()
	var table strings.Builder
	// Every row carries the machine's load when it was measured: on a
	// shared machine the figures move with it.
	row := func(format string, a ...any) {
		line := fmt.Sprintf(format, a...)
		if bench {
			line += " [load " + framework.LoadAvg() + "]"
		}
		fmt.Fprintln(&table, line)
		t.Log(line)
	}
	created := 0
	create := func(phase string, jobs []job, workers int) (time.Duration, []time.Duration) {
		t.Helper()
		rs.Proxy.TakeLatencies("/mutate")
		start := time.Now()
		outs := run(c, jobs, workers, nil)
		el := time.Since(start)
		for _, o := range outs {
			if o.err != nil {
				t.Fatalf("%s: create %s/%s: %v", phase, o.ns, o.job.svc.Name, o.err)
			}
			for _, m := range o.alreadyAllocated {
				t.Errorf("%s: %s/%s: apiserver said %q", phase, o.ns, o.job.svc.Name, m)
			}
		}
		return el, rs.Proxy.TakeLatencies("/mutate")
	}
	const probeN = 200
	var emptyP50 time.Duration
	var emptyAPI apiLatency
	if bench {
		create("warm-up", scaleJobs("warm", 0, 40, namespaces), scaleWorkers)
		before := readLatency(t, c, rs.Hooks)
		_, lat := create("probe on the empty cluster", scaleJobs("probe0", 0, probeN, namespaces), scaleWorkers)
		emptyAPI = readLatency(t, c, rs.Hooks).sub(before)
		emptyP50 = framework.Percentile(lat, 0.5)
		created += 40 + probeN
		row("/mutate on the empty cluster: p50 %s p99 %s (n=%d, %d concurrent creators); the apiserver's own %s", emptyP50.Round(100*time.Microsecond),
			framework.Percentile(lat, 0.99).Round(100*time.Microsecond), len(lat), scaleWorkers, emptyAPI)
	}

	// The bulk: in rounds, each followed (bench) by a tenth as many
	// Services in the unserved namespace, the no-webhook baseline.
	rounds := 10
	per := n / rounds
	var pinnedTime, plainTime time.Duration
	plainN := 0
	for r := range rounds {
		k := per
		if r == rounds-1 {
			k = n - per*(rounds-1)
		}
		el, lat := create(fmt.Sprintf("round %d", r+1), scaleJobs("s", r*per, k, namespaces), scaleWorkers)
		pinnedTime += el
		created += k
		line := fmt.Sprintf("round %2d: %6d pinned Services, %5.1f creates/s, /mutate p50 %s", r+1, created, float64(k)/el.Seconds(),
			framework.Percentile(lat, 0.5).Round(100*time.Microsecond))
		if bench {
			m := max(k/10, 20)
			pel, _ := create("no webhook", scaleJobs(fmt.Sprintf("plain%d", r), 0, m, []string{plainNS}), scaleWorkers)
			plainTime += pel
			plainN += m
			line += fmt.Sprintf("; no webhook %5.1f creates/s; max RSS %s MiB", float64(m)/pel.Seconds(), mem.maxString())
		}
		row("%s", line)
	}
	throughputRatio := 0.0
	if bench {
		throughputRatio = (float64(n) / pinnedTime.Seconds()) / (float64(plainN) / plainTime.Seconds())
		row("create throughput: pinned %.1f/s, no webhook %.1f/s: %.2fx", float64(n)/pinnedTime.Seconds(), float64(plainN)/plainTime.Seconds(), throughputRatio)
	}
	snap := consistentIn(t, c, fmt.Sprintf("%d Services created (every pool address bound, 0 duplicates)", created), 5*time.Minute, inScale)
	pinned := pinnedAddrs(snap)

	// status counts every bound address.
	statusTime := timeStatus(t, rs, pinned)
	// The baseline: the apiserver listing what status reads most of.
	listStart := time.Now()
	if _, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps(replicasState).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector}); err != nil {
		t.Fatal(err)
	}
	listTime := time.Since(listStart)
	row("status: %s for %d pool addresses (listing every Service and reservation ConfigMap alone: %s)", statusTime.Round(10*time.Millisecond), pinned,
		listTime.Round(10*time.Millisecond))

	var fullP50 time.Duration
	readyTime := time.Duration(0)
	cmRatio := 0.0
	if bench {
		before := readLatency(t, c, rs.Hooks)
		_, lat := create(fmt.Sprintf("probe at %d", created), scaleJobs("probe1", 0, probeN, namespaces), scaleWorkers)
		fullAPI := readLatency(t, c, rs.Hooks).sub(before)
		created += probeN
		fullP50 = framework.Percentile(lat, 0.5)
		if e := emptyAPI.cm.Quantile(0.5); e > 0 {
			cmRatio = float64(fullAPI.cm.Quantile(0.5)) / float64(e)
		}
		row("/mutate at %d Services: p50 %s p99 %s (n=%d): %.2fx the empty cluster's p50; the apiserver's own %s: ConfigMap create p50 %.2fx the empty cluster's", created, fullP50.Round(100*time.Microsecond),
			framework.Percentile(lat, 0.99).Round(100*time.Microsecond), len(lat), float64(fullP50)/float64(emptyP50), fullAPI, cmRatio)
		saveProfiles(t, rs, "full")
		// A replica restarted (graceful stop, new process): time to Ready.
		last := len(rs.Hooks) - 1
		if err := rs.Hooks[last].Stop(); err != nil {
			t.Fatalf("stop replica %d: %v", last, err)
		}
		// Measured, not bounded: at 20,000 Services on a loaded machine
		// the lists take longer than the framework's default minute.
		opts := rs.Opts[last]
		opts.ReadyTimeout = 10 * time.Minute
		start := time.Now()
		w, err := framework.StartWebhook(ctx, opts)
		if err != nil {
			t.Fatalf("restart replica %d: %v", last, err)
		}
		readyTime = time.Since(start)
		rs.Hooks[last] = w
		if err := rs.Proxy.Replace(last, w); err != nil {
			t.Fatal(err)
		}
		row("replica %d restarted: Ready (GET /readyz 200) after %s", last, readyTime.Round(10*time.Millisecond))
	}

	// Rebuild: every state ConfigMap deleted, admissions going on.
	var cpuProfile sync.WaitGroup
	if bench {
		cpuProfile.Add(1)
		go func() { defer cpuProfile.Done(); saveCPUProfile(t, rs, "rebuild", 30*time.Second) }()
	}
	// The admissions go on from the first delete to the end of the
	// rebuild.
	extra := max(n/50, 40)
	rs.Proxy.TakeLatencies("/mutate")
	var during []outcome
	duringDone := make(chan struct{})
	del := deleteState(t, c, func() {
		go func() {
			defer close(duringDone)
			during = run(c, scaleJobs("rebuild", 0, extra, namespaces), 4, nil)
		}()
	})
	rebuildTime := waitRebuilt(t, rs.Env, del.names, 20*time.Minute, del.last)
	<-duringDone
	for _, o := range during {
		if o.err != nil {
			t.Fatalf("during the rebuild: create %s/%s: %v", o.ns, o.job.svc.Name, o.err)
		}
		for _, m := range o.alreadyAllocated {
			t.Errorf("during the rebuild: %s/%s: apiserver said %q", o.ns, o.job.svc.Name, m)
		}
	}
	lat := rs.Proxy.TakeLatencies("/mutate")
	created += extra
	fromFirst := del.last.Sub(del.first) + rebuildTime
	row("%d state ConfigMaps deleted by name in %s (%d already re-created when the last delete returned); all %d re-created and bound %s after the last delete returned, %s after the first; %d Services created from the first delete on (/mutate p50 %s p99 %s)",
		del.deleted, del.last.Sub(del.first).Round(10*time.Millisecond), del.rebuiltByLast, del.deleted, rebuildTime.Round(10*time.Millisecond),
		fromFirst.Round(10*time.Millisecond), extra, framework.Percentile(lat, 0.5).Round(100*time.Microsecond), framework.Percentile(lat, 0.99).Round(100*time.Microsecond))
	snap = consistentIn(t, c, "state rebuilt (every pool address bound, 0 duplicates)", 5*time.Minute, inScale)
	dups := len(framework.Check(snap, inScale, true).Duplicates)
	cpuProfile.Wait()
	if !bench {
		return
	}
	saveProfiles(t, rs, "end")
	row("replica RSS max over the run: %s MiB (per replica: %s)", mem.maxString(), mem.perReplica())
	summary := fmt.Sprintf("bench-scale: services=%d rss_mib_max=%s ready_s=%.2f rebuild_s=%.1f rebuild_from_first_delete_s=%.1f status_s=%.2f mutate_p50_ratio=%.2f apiserver_cm_create_p50_ratio=%.2f throughput_ratio=%.2f duplicates=%d",
		n, mem.maxString(), readyTime.Seconds(), rebuildTime.Seconds(), fromFirst.Seconds(), statusTime.Seconds(), float64(fullP50)/float64(emptyP50), cmRatio, throughputRatio, dups)
	if memLimit == "" {
		memLimit = "unset"
	}
	head := fmt.Sprintf("bench-scale %s: %d pinned Services (a quarter dual-stack) in %d namespaces, 3 pools, 3 replicas (GOMEMLIMIT %s), %d concurrent creators; kube-apiserver v1.37.2 + etcd on loopback, %d CPUs, load %s\n",
		time.Now().UTC().Format(time.RFC3339), n, scaleNamespaces, memLimit, scaleWorkers, runtimeCPUs(), framework.LoadAvg())
	out := head + table.String() + summary + "\n"
	t.Log("\n" + out)
	fmt.Println(summary)
	if root, err := framework.RepoRoot(); err == nil {
		p := filepath.Join(root, "e2e", "_artifacts", "bench-scale-"+time.Now().Format("20060102-150405")+".txt")
		if err := os.WriteFile(p, []byte(out), 0o644); err == nil {
			t.Logf("written to %s (profiles in %s)", p, rs.Env.Artifacts)
		}
	}
}

// apiLatency is the apiserver's own request latency (from its /metrics)
// for the two creates a pinned Service costs: the reservation ConfigMap
// /mutate writes and the Service itself (which includes the webhook calls).
type apiLatency struct{ cm, svc, store framework.Histogram }

// readLatency is readAPILatency plus the replicas' own timing of their
// reservation creates (dualstack_webhook_store_request_duration_seconds):
// the same write seen from the client, network and queueing included.
func readLatency(t *testing.T, c kubernetes.Interface, hooks []*framework.Webhook) apiLatency {
	t.Helper()
	a := readAPILatency(t, c)
	h, err := framework.WebhookHistogram(hooks, "dualstack_webhook_store_request_duration_seconds", map[string]string{"verb": "create"})
	if err != nil {
		t.Logf("replica latency: %v", err)
	}
	a.store = h
	return a
}

func readAPILatency(t *testing.T, c kubernetes.Interface) apiLatency {
	t.Helper()
	var a apiLatency
	for _, x := range []struct {
		h        *framework.Histogram
		resource string
	}{{&a.cm, "configmaps"}, {&a.svc, "services"}} {
		h, err := framework.APIServerHistogram(context.Background(), c, "apiserver_request_duration_seconds",
			map[string]string{"resource": x.resource, "verb": "POST", "dry_run": ""})
		if err != nil {
			t.Logf("apiserver latency: %v", err)
		}
		*x.h = h
	}
	return a
}

func (a apiLatency) sub(prev apiLatency) apiLatency {
	return apiLatency{cm: a.cm.Sub(prev.cm), svc: a.svc.Sub(prev.svc), store: a.store.Sub(prev.store)}
}

func (a apiLatency) String() string {
	s := fmt.Sprintf("ConfigMap create p50 %s (n=%d), Service create p50 %s (n=%d, the webhook calls included)",
		a.cm.Quantile(0.5).Round(100*time.Microsecond), a.cm.Count(), a.svc.Quantile(0.5).Round(100*time.Microsecond), a.svc.Count())
	if a.store.Count() > 0 {
		s += fmt.Sprintf("; the replicas' reservation create as they timed it p50 %s (n=%d)", a.store.Quantile(0.5).Round(100*time.Microsecond), a.store.Count())
	}
	return s
}

// pinnedAddrs counts the pool addresses live Services hold.
func pinnedAddrs(s framework.Snapshot) int {
	n := 0
	for _, ips := range s.Services {
		for _, ip := range ips {
			if inScale(ip) {
				n++
			}
		}
	}
	return n
}

// timeStatus runs `dualstack-webhook status -o json` against the cluster
// and fails unless its bound counts add up to pinned.
func timeStatus(t *testing.T, rs *framework.ReplicaSet, pinned int) time.Duration {
	t.Helper()
	bin, err := framework.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command(bin, "status", "--kubeconfig", rs.Env.Kubeconfig, "-n", replicasState, "-o", "json").Output()
	el := time.Since(start)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		Pools []struct {
			Families []struct {
				Bound, Pending, Sticky, Unrecorded int
			} `json:"families"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status output: %v\n%s", err, out)
	}
	bound, other := 0, 0
	for _, p := range st.Pools {
		for _, f := range p.Families {
			bound += f.Bound
			other += f.Pending + f.Sticky + f.Unrecorded
		}
	}
	if bound != pinned || other != 0 {
		t.Errorf("status counts %d bound and %d pending/sticky/unrecorded, want %d bound and 0:\n%s", bound, other, pinned, out)
	}
	return el
}

// waitRebuilt polls the bound reservations (metadata only, from the watch
// cache) until every name in names is among them again, and returns the
// time since since (zero when they already are at the first look).
// Reservations of Services created meanwhile are not waited for: the
// consistency check after it covers them.
func waitRebuilt(t *testing.T, env *framework.Env, names map[string]bool, timeout time.Duration, since time.Time) time.Duration {
	t.Helper()
	mc, err := metadata.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	cms := mc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(replicasState)
	sel := configmap.Selector + "," + configmap.LabelState + "=bound"
	deadline := time.Now().Add(timeout)
	last := -1
	for {
		list, err := cms.List(context.Background(), metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err == nil {
			last = 0
			for _, m := range list.Items {
				if names[m.Name] {
					last++
				}
			}
			if last == len(names) {
				return max(time.Since(since), 0)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuild: %d of %d deleted reservations bound again after %s (last error %v)", last, len(names), timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// rssSampler records each replica's resident set size every second.
type rssSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	max  []int64 // KiB, per replica slot
}

func startRSSSampler(t *testing.T, rs *framework.ReplicaSet) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), max: make([]int64, len(rs.Hooks))}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			for i, w := range append([]*framework.Webhook(nil), rs.Hooks...) {
				if !w.Running() {
					continue
				}
				pid := w.PID()
				if kib := vmRSS(pid); kib > 0 {
					s.mu.Lock()
					s.max[i] = max(s.max[i], kib)
					s.mu.Unlock()
				}
			}
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *rssSampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}

func (s *rssSampler) maxString() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m int64
	for _, v := range s.max {
		m = max(m, v)
	}
	return fmt.Sprintf("%.0f", float64(m)/1024)
}

func (s *rssSampler) perReplica() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, v := range s.max {
		parts = append(parts, fmt.Sprintf("%.0f", float64(v)/1024))
	}
	return strings.Join(parts, ", ")
}

// vmRSS is /proc/<pid>/status VmRSS in KiB (0 if unreadable).
func vmRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kib, _ := strconv.ParseInt(f[0], 10, 64)
				return kib
			}
		}
	}
	return 0
}

// saveProfiles writes each replica's heap profile into the artifacts
// (`go tool pprof -top <file>` reads them).
func saveProfiles(t *testing.T, rs *framework.ReplicaSet, tag string) {
	for i, w := range rs.Hooks {
		saveURL(t, w.MetricsURL+"/debug/pprof/heap", filepath.Join(rs.Env.Artifacts, fmt.Sprintf("heap-%s-replica-%d.pb.gz", tag, i)), 30*time.Second)
	}
}

// saveCPUProfile profiles every replica for d at once.
func saveCPUProfile(t *testing.T, rs *framework.ReplicaSet, tag string, d time.Duration) {
	var wg sync.WaitGroup
	for i, w := range append([]*framework.Webhook(nil), rs.Hooks...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			saveURL(t, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", w.MetricsURL, int(d.Seconds())),
				filepath.Join(rs.Env.Artifacts, fmt.Sprintf("cpu-%s-replica-%d.pb.gz", tag, i)), d+30*time.Second)
		}()
	}
	wg.Wait()
}

func saveURL(t *testing.T, url, path string, timeout time.Duration) {
	cl := &http.Client{Timeout: timeout}
	resp, err := cl.Get(url)
	if err != nil {
		t.Logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Logf("profile %s: HTTP %d %v", url, resp.StatusCode, err)
		return
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Logf("profile %s: %v", path, err)
	}
}
