package pinning

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

const (
	replicasState = "dsw-replicas-state"
	// leaseName is the reconciler's Lease in the state namespace.
	leaseName = "dualstack-webhook-reconciler"
)

// The replicas' pool: bigger than the static band (256 per family), since the
// proof creates several hundred Services.
var (
	bulkDoc = framework.BulkPoolsDoc("bulk")
	inBulk  = framework.InBulkPool
)

// startReplicas brings up n replicas with leader election and this
// package's grace periods plus extra flags, sharing replicasState and
// poolsDoc.
func startReplicas(t *testing.T, name string, n int, poolsDoc string, extra ...string) *framework.ReplicaSet {
	t.Helper()
	return startReplicasWith(t, name, n, poolsDoc, append(append([]string{"--leader-election=true"}, pinFlags...), extra...))
}

// startReplicasWith is startReplicas with the replicas' flags given whole.
func startReplicasWith(t *testing.T, name string, n int, poolsDoc string, args []string) *framework.ReplicaSet {
	t.Helper()
	framework.NeedPrereq(t, prereqErr)
	return framework.StartReplicaSet(t, framework.ReplicaSetOptions{
		Name: name, Replicas: n, StateNS: replicasState, PoolsDoc: poolsDoc, Args: args,
	})
}

// job is one Service create of a workload.
type job struct {
	ns   string
	svc  *corev1.Service
	deny bool // labelled for the later webhook: must be denied
}

// outcome is what happened to a job, retries included.
type outcome struct {
	job
	svc              *corev1.Service
	err              error // final error
	attempts         int
	alreadyAllocated []string // apiserver "already allocated" answers
	transient        []string // retried: webhook unreachable, 5xx, try again
	latency          time.Duration
}

// mixed is the i-th Service of a workload: one in six RequireDualStack IPv6
// first, one PreferDualStack, one SingleStack IPv6, the rest the apiserver's
// default (SingleStack IPv4).
func mixed(name string, i int) *corev1.Service {
	switch i % 6 {
	case 0:
		return newService(name, framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(v6, v4))
	case 1:
		return newService(name, framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack))
	case 2:
		return newService(name, framework.WithFamilies(v6))
	}
	return newService(name)
}

// workload builds n jobs named <prefix>-<i> spread over namespaces; every
// denyEvery-th one (0: none) is labelled for the later webhook.
func workload(prefix string, n int, namespaces []string, denyEvery int) []job {
	jobs := make([]job, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		j := job{ns: namespaces[i%len(namespaces)], svc: mixed(name, i)}
		if denyEvery > 0 && i%denyEvery == denyEvery-1 {
			j.svc.Labels[denyLabel] = "true"
			j.deny = true
		}
		jobs = append(jobs, j)
	}
	return jobs
}

// run creates the jobs with `workers` concurrent clients. A create failing
// transiently (webhook unreachable, 5xx, "try again") or with "already
// allocated" is retried up to 5 times; both are recorded. afterEach is
// called with the number of jobs finished so far.
func run(c kubernetes.Interface, jobs []job, workers int, afterEach func(done int)) []outcome {
	out := make([]outcome, len(jobs))
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				out[i] = createOne(c, jobs[i])
				if afterEach != nil {
					afterEach(int(done.Add(1)))
				}
			}
		}()
	}
	wg.Wait()
	return out
}

func createOne(c kubernetes.Interface, j job) (o outcome) {
	o.job = j
	ctx := context.Background()
	start := time.Now()
	defer func() { o.latency = time.Since(start) }()
	for o.attempts < 6 {
		o.attempts++
		got, err := c.CoreV1().Services(j.ns).Create(ctx, j.svc.DeepCopy(), metav1.CreateOptions{})
		if err == nil {
			o.svc, o.err = got, nil
			return o
		}
		o.err = err
		msg := err.Error()
		switch {
		case j.deny:
			return o
		case apierrors.IsAlreadyExists(err) && o.attempts > 1:
			// An earlier attempt that timed out on our side did succeed.
			if got, gerr := c.CoreV1().Services(j.ns).Get(ctx, j.svc.Name, metav1.GetOptions{}); gerr == nil {
				o.svc, o.err = got, nil
				return o
			}
			return o
		case strings.Contains(msg, "already allocated"):
			o.alreadyAllocated = append(o.alreadyAllocated, msg)
		case strings.Contains(msg, "failed calling webhook"), strings.Contains(msg, "try again"),
			apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err), apierrors.IsTimeout(err),
			apierrors.IsServerTimeout(err), apierrors.IsTooManyRequests(err):
			o.transient = append(o.transient, msg)
		default:
			return o
		}
		time.Sleep(time.Duration(o.attempts) * 100 * time.Millisecond)
	}
	return o
}

// tally summarises outcomes and reports every broken expectation: a job not
// created (or a deny job admitted), an apiserver "already allocated", an
// address outside the pool.
func tally(t *testing.T, phase string, outs []outcome, denyMsg string) (created int) {
	t.Helper()
	var denied, allocated, transient, failed, retried int
	var lat []time.Duration
	for _, o := range outs {
		allocated += len(o.alreadyAllocated)
		transient += len(o.transient)
		if o.attempts > 1 {
			retried++
		}
		for _, m := range o.alreadyAllocated {
			t.Errorf("%s: %s/%s: apiserver said %q", phase, o.ns, o.job.svc.Name, m)
		}
		switch {
		case o.deny:
			if o.err == nil || !strings.Contains(o.err.Error(), denyMsg) {
				t.Errorf("%s: %s/%s (labelled for the later webhook): %s, want denied by it", phase, o.ns, o.job.svc.Name, errText(o.err))
				failed++
			} else {
				denied++
			}
		case o.err != nil:
			failed++
			t.Errorf("%s: create %s/%s failed after %d attempts: %v (transient: %q)", phase, o.ns, o.job.svc.Name, o.attempts, o.err, o.transient)
		default:
			created++
			lat = append(lat, o.latency)
			for _, ip := range o.svc.Spec.ClusterIPs {
				if a, err := netip.ParseAddr(ip); err != nil || !inBulk(a) {
					t.Errorf("%s: %s/%s got %s, outside pool bulk (%s): not pinned", phase, o.ns, o.svc.Name, ip, framework.BulkPoolRanges)
				}
			}
		}
	}
	t.Logf("%s: %d created, %d denied by the later webhook, %d failed; %d \"already allocated\"; %d transient errors retried (%d creates needed a retry); create latency p50 %s p99 %s",
		phase, created, denied, failed, allocated, transient, retried, framework.Percentile(lat, 0.5).Round(time.Millisecond), framework.Percentile(lat, 0.99).Round(time.Millisecond))
	return created
}

// TestReplicas is the multi-replica proof: three webhook processes behind
// one registration, hundreds of concurrent creates in several namespaces
// (a third dual-stack, some denied by a later webhook), then one replica
// killed mid-run and every state ConfigMap deleted, with the survivors
// still serving and the reconciler rebuilding the state.
func TestReplicas(t *testing.T) {
	rs := startReplicas(t, "replicas", 3, bulkDoc)
	c := rs.Env.Client
	ctx := context.Background()
	deny := startDenyWebhook(t, c, "replicas", rs.Scope)
	var namespaces []string
	for i := range 5 {
		namespaces = append(namespaces, scoped(t, c, rs.Scope, fmt.Sprintf("load%d", i)))
	}
	total := 0

	// Phase 1: 300 Services + 20 denied by the later webhook, 32 at a time.
	start := time.Now()
	outs := run(c, workload("p1", 320, namespaces, 16), 32, nil)
	total += tally(t, "phase 1", outs, deny.message)
	t.Logf("phase 1 took %s", time.Since(start).Round(time.Millisecond))
	served, failovers := rs.Proxy.Stats()
	t.Logf("requests per replica %v, failovers %d", served, failovers)
	for i, n := range served {
		if n == 0 {
			t.Errorf("replica %d served no request: the proof did not exercise three replicas", i)
		}
	}
	if total != 300 {
		t.Fatalf("phase 1 created %d Services, want 300", total)
	}
	snap, err := framework.TakeSnapshot(ctx, c, replicasState)
	if err != nil {
		t.Fatal(err)
	}
	// Duplicates and IPAddress mismatches cannot heal: report them at once
	// (pending reservations of the denied creates are expected until GC).
	if f := framework.Check(snap, inBulk, false); len(f.Duplicates)+len(f.IPAddress) > 0 {
		t.Errorf("right after phase 1: %s", framework.Findings{Duplicates: f.Duplicates, IPAddress: f.IPAddress})
	} else {
		t.Logf("right after phase 1: 0 duplicates, every address backed by its IPAddress; %d orphan reservations awaiting GC", len(f.Orphans))
	}
	consistent(t, c, "after phase 1 (pending reservations of the denied creates freed, every pin bound)", 60*time.Second)
	holder := leaseHolder(t, c)

	// Phase 2: 90 more; replica 0 is killed (SIGKILL) after 30 of them.
	var killed atomic.Bool
	var servedAtKill []int
	var killErr error
	var killOnce sync.Once
	outs = run(c, workload("p2", 90, namespaces, 0), 16, func(done int) {
		if done >= 30 {
			killOnce.Do(func() {
				killErr = kill(rs.Hooks[0])
				servedAtKill, _ = rs.Proxy.Stats()
				killed.Store(true)
			})
		}
	})
	if killErr != nil || !killed.Load() {
		t.Fatalf("kill replica 0: %v (killed %v)", killErr, killed.Load())
	}
	total += tally(t, "phase 2 (replica 0 killed after 30)", outs, deny.message)
	servedNow, failovers := rs.Proxy.Stats()
	t.Logf("requests per replica at the kill %v, after phase 2 %v, failovers %d; lease holder before %q", servedAtKill, servedNow, failovers, holder)
	if servedNow[1]+servedNow[2] <= servedAtKill[1]+servedAtKill[2] {
		t.Errorf("the survivors served nothing after the kill")
	}
	if rs.Hooks[0].Running() {
		t.Errorf("replica 0 still running after SIGKILL")
	}

	// Phase 3: all state deleted, 60 more created straight away.
	del := deleteState(t, c, nil)
	outs = run(c, workload("p3", 60, namespaces, 0), 16, nil)
	total += tally(t, "phase 3 (every state ConfigMap deleted just before)", outs, deny.message)
	t.Logf("%d Services live in the test namespaces after deleting %d state ConfigMaps", total, del.deleted)
	consistent(t, c, "state rebuilt by the surviving reconciler (every live pin reserved and bound to its Service, nothing else)", 120*time.Second)
	t.Logf("lease holder after: %q", leaseHolder(t, c))
}

// consistent waits until check passes with requireBound, failing with the
// last findings after timeout. Duplicates fail at once: they cannot heal.
func consistent(t *testing.T, c kubernetes.Interface, what string, timeout time.Duration) {
	t.Helper()
	consistentIn(t, c, what, timeout, inBulk)
}

// consistentIn is consistent for the pools inBulk says an address is in.
func consistentIn(t *testing.T, c kubernetes.Interface, what string, timeout time.Duration, inBulk framework.InPool) framework.Snapshot {
	t.Helper()
	var snap framework.Snapshot
	framework.Eventually(t, timeout, what, func(ctx context.Context) (bool, string) {
		var err error
		if snap, err = framework.TakeSnapshot(ctx, c, replicasState); err != nil {
			return false, err.Error()
		}
		f := framework.Check(snap, inBulk, true)
		if len(f.Duplicates) > 0 {
			t.Fatalf("duplicate addresses: %s", f)
		}
		return f.Empty(), f.String()
	})
	pinned := 0
	for _, ips := range snap.Services {
		for _, ip := range ips {
			if inBulk(ip) {
				pinned++
			}
		}
	}
	t.Logf("%d Services, %d pool addresses, %d reservations, %d IPAddress objects: 0 duplicates",
		len(snap.Services), pinned, len(snap.Reservations), len(snap.IPAddresses))
	if pinned != len(snap.Reservations) {
		t.Errorf("%d pool addresses but %d reservations", pinned, len(snap.Reservations))
	}
	return snap
}

// stateDeletion is what deleteState did and saw.
type stateDeletion struct {
	// deleted: reservation ConfigMaps listed and deleted (by name and UID).
	deleted int
	// first is when the first delete was sent, last when the last one
	// returned: from last on, every ConfigMap listed at the start is gone.
	first, last time.Time
	// rebuiltByLast: reservations (new objects, the reconciler's rebuild)
	// listed right after the last delete returned.
	rebuiltByLast int
	// names are the deleted ConfigMaps' names (one per address).
	names map[string]bool
}

// deleteState deletes every reservation ConfigMap listed at its start, each
// by name with its UID as a precondition, 16 at a time: what the reconciler
// re-creates meanwhile (same name, new UID) is never touched, so the
// rebuild can be timed from the moment the whole listed state is gone. (One
// DeleteCollection of 27,000 ConfigMaps outlasts the apiserver's request
// timeout on two cores, and calling it again deletes what was rebuilt
// meanwhile.)
// afterList, when set, is called between the list and the first delete
// (admissions started there never see their own pending claims deleted).
func deleteState(t *testing.T, c kubernetes.Interface, afterList func()) stateDeletion {
	t.Helper()
	ctx := context.Background()
	list, err := c.CoreV1().ConfigMaps(replicasState).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
	if err != nil {
		t.Fatal(err)
	}
	if afterList != nil {
		afterList()
	}
	work := make(chan *corev1.ConfigMap)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cm := range work {
				uid := cm.UID
				var err error
				for attempt := 1; attempt <= 5; attempt++ {
					err = c.CoreV1().ConfigMaps(replicasState).Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
					// Gone already (NotFound) or re-created (a UID
					// precondition failure is a Conflict): either way the
					// listed object is no more.
					if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
						err = nil
						break
					}
					time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("delete reservation ConfigMap %s: %w", cm.Name, err):
					default:
					}
				}
			}
		}()
	}
	d := stateDeletion{deleted: len(list.Items), names: make(map[string]bool, len(list.Items)), first: time.Now()}
	for i := range list.Items {
		d.names[list.Items[i].Name] = true
		work <- &list.Items[i]
	}
	close(work)
	wg.Wait()
	d.last = time.Now()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	left, err := framework.Reservations(ctx, c, replicasState)
	if err != nil {
		t.Fatal(err)
	}
	d.rebuiltByLast = len(left)
	t.Logf("deleted %d state ConfigMaps in %s (%d already re-created when the last delete returned)", d.deleted,
		d.last.Sub(d.first).Round(10*time.Millisecond), d.rebuiltByLast)
	return d
}

// leaseHolder returns the reconciler Lease's holder; the Lease must exist.
func leaseHolder(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	l, err := c.CoordinationV1().Leases(replicasState).Get(context.Background(), leaseName, metav1.GetOptions{})
	if err != nil {
		t.Errorf("reconciler Lease %s/%s: %v", replicasState, leaseName, err)
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// kill sends SIGKILL to a webhook process the harness started (found by its
// unique --listen address in /proc): a crash, not a graceful stop.
func kill(w *framework.Webhook) error {
	listen := strings.TrimPrefix(w.URL, "https://")
	want := []byte("--listen\x00" + listen + "\x00")
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, want) || !bytes.HasPrefix(cmdline, []byte(w.Args[0]+"\x00")) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		deadline := time.Now().Add(10 * time.Second)
		for w.Running() {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d still running 10s after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	}
	return errors.New("no process with " + strings.ReplaceAll(string(want), "\x00", " "))
}
