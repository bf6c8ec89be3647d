package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// clockOffset is how far replica 0's clock jumps: past --pending-grace and
// past --retention, so that trusting it would free every pending and
// sticky reservation made by the other replicas.
const clockOffset = time.Hour

// TestPoolsAndClock is the compact run `make test` includes: under load,
// with the reconciler running on a replica whose clock is an hour ahead,
// the pools ConfigMap is deleted, then re-created with garbage, then
// restored. Rows:
//
//   - pools ConfigMap deleted / garbage: the last good pools stay in
//     force (every address handed out meanwhile is from them), every
//     replica says why (Warning Event PoolsNotApplied, metrics
//     dualstack_webhook_pools_stale and _pools_rejected_total{reason}),
//     nothing is handed out twice; a replica restarted during each fault
//     (replica 2 while deleted, replica 1 while garbage, as a rolling
//     update would) starts from the last applied pools, recorded by the
//     replicas that applied them, never from the static band;
//   - clock +1h on the reconciler's replica: no reservation of a live
//     Service is freed (none had to be re-imported), and every address of
//     a Service deleted during the run is still sticky to its name (the
//     retention, 10 minutes, is not over in the apiserver's time).
func TestPoolsAndClock(t *testing.T) {
	cl := startCluster(t, "poolsclock", clusterOptions{
		replica0Args:  []string{"--test-clock-offset", clockOffset.String()},
		replica0Leads: true,
	})
	c := cl.c
	ctx := context.Background()
	eventually(t, 30*time.Second, "replica 0 measured its clock an hour ahead of the apiserver's", func(context.Context) (bool, string) {
		v, ok := metric(t, cl.hooks[0], "dualstack_webhook_clock_skew_seconds")
		return ok && v > clockOffset.Seconds()-5 && v < clockOffset.Seconds()+5, fmt.Sprintf("skew %gs", v)
	})
	l := startLoad(c, cl.namespaces(t, cl.scope, "load", 3), 4, "w")
	t0 := time.Now()
	time.Sleep(6 * time.Second)

	// Every replica reports the rejection, on the metrics and by an Event.
	reported := func(what, reason string) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("%s: every replica flags the pools stale (reason %s)", what, reason), func(context.Context) (bool, string) {
			var seen []string
			ok := true
			for i, w := range cl.hooks {
				stale, _ := metric(t, w, "dualstack_webhook_pools_stale")
				rej, _ := metric(t, w, "dualstack_webhook_pools_rejected_total", `reason="`+reason+`"`)
				seen = append(seen, fmt.Sprintf("replica %d: stale %g rejected{%s} %g", i, stale, reason, rej))
				ok = ok && stale == 1 && rej >= 1
			}
			return ok, strings.Join(seen, ", ")
		})
		eventually(t, 30*time.Second, what+": Warning Event "+"PoolsNotApplied on the ConfigMap", func(ctx context.Context) (bool, string) {
			evs, err := c.CoreV1().Events(stateNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + poolsCM + ",reason=PoolsNotApplied"})
			if err != nil {
				return false, err.Error()
			}
			for _, e := range evs.Items {
				if e.Type == "Warning" && strings.Contains(e.Message, "("+reason+")") {
					return true, e.Message
				}
			}
			return false, fmt.Sprintf("%d PoolsNotApplied events", len(evs.Items))
		})
	}

	// restarted: replica i restarted while the ConfigMap is deleted or
	// garbage starts from the last applied pools (the record the replicas
	// wrote when they applied them), not the static band, says so, and
	// serves its share of the load (every address of which the final check
	// requires to be in the pool).
	restarted := func(what string, i int, reason string) time.Duration {
		t.Helper()
		t0 := time.Now()
		w := cl.restart(t, i)
		took := time.Since(t0)
		eventually(t, 30*time.Second, what+": the restarted replica "+fmt.Sprint(i)+" pins from the recorded pools, flagged stale", func(context.Context) (bool, string) {
			stale, _ := metric(t, w, "dualstack_webhook_pools_stale")
			rej, _ := metric(t, w, "dualstack_webhook_pools_rejected_total", `reason="`+reason+`"`)
			pools := poolsInForce(t, w)
			return stale == 1 && rej == 1 && slices.Equal(pools, []string{"bulk"}), fmt.Sprintf("stale %g rejected{%s} %g pools %v", stale, reason, rej, pools)
		})
		eventually(t, 30*time.Second, what+": the restarted replica serves the load", func(context.Context) (bool, string) {
			n := cl.front.stats()[i]
			return n >= 5, fmt.Sprintf("%d admissions", n)
		})
		return took
	}
	note := func(i int, took time.Duration, reason string, served int) string {
		return fmt.Sprintf("replica %d restarted meanwhile (ready %s after SIGTERM to the old process): pools_stale 1, rejected{%s} 1, pool bulk in force, %d admissions served by it to the end",
			i, took.Round(10*time.Millisecond), reason, served)
	}

	// Deleted.
	tDel := time.Now()
	if err := c.CoreV1().ConfigMaps(stateNS).Delete(ctx, poolsCM, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	reported("deleted", "deleted")
	tookDel := restarted("deleted", 2, "deleted")
	time.Sleep(3 * time.Second)

	// Garbage.
	tGarbage := time.Now()
	if _, err := c.CoreV1().ConfigMaps(stateNS).Create(ctx, poolsConfigMap("{{{ not a pools document"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reported("garbage", "invalid")
	tookGarbage := restarted("garbage", 1, "invalid")
	time.Sleep(3 * time.Second)

	// Restored.
	tGood := time.Now()
	cm, err := c.CoreV1().ConfigMaps(stateNS).Get(ctx, poolsCM, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["pools.yaml"] = framework.BulkPoolsDoc("bulk")
	if _, err := c.CoreV1().ConfigMaps(stateNS).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "restored: no replica flags the pools stale", func(context.Context) (bool, string) {
		ok := true
		var seen []string
		for i, w := range cl.hooks {
			v, _ := metric(t, w, "dualstack_webhook_pools_stale")
			seen = append(seen, fmt.Sprintf("replica %d: %g", i, v))
			ok = ok && v == 0
		}
		return ok, strings.Join(seen, ", ")
	})
	time.Sleep(3 * time.Second)
	tEnd := time.Now()
	ops := l.halt()

	served := cl.front.stats()
	rows := []row{
		tally("pools ConfigMap deleted", ops, tDel, tGarbage),
		tally("pools ConfigMap replaced with garbage", ops, tGarbage, tGood),
		tally(fmt.Sprintf("clock of the reconciler's replica %s ahead (whole run)", clockOffset), ops, t0, tEnd),
	}
	rows[0].notes = append(rows[0].notes, note(2, tookDel, "deleted", served[2]))
	rows[1].notes = append(rows[1].notes, note(1, tookGarbage, "invalid", served[1]))
	for i := range rows {
		if rows[i].failed > 0 {
			t.Errorf("%s: %d of %d requests failed: %v", rows[i].name, rows[i].failed, rows[i].total, rows[i].messages)
		}
	}
	// One settle for the three rows: they share the run.
	all := row{name: "pools and clock"}
	settle(t, c, l, &all, 60*time.Second)
	if n := imported(t, cl); n > 0 {
		t.Errorf("%g reservations had to be re-imported for live Services: the jumped reconciler freed them", n)
		all.lost += int(n)
	}
	for i := range rows {
		rows[i].duplicates, rows[i].leaks, rows[i].lost = all.duplicates, all.leaks, all.lost
	}
	created, deleted, sticky := l.counts()
	rows[2].notes = append(rows[2].notes, fmt.Sprintf("%d Services created, %d deleted, %d of their addresses checked still sticky; lease holder %s", created, deleted, sticky, cl.leaseHolder(ctx)))
	if sticky == 0 {
		t.Error("no address of a deleted Service was old enough to check: the sticky check proved nothing")
	}
	report(t, rows...)
}

// poolsInForce are the pools a replica pins from, as its
// dualstack_webhook_pool_addresses gauge (computed from the pools in force
// on every scrape) names them, sorted.
func poolsInForce(t *testing.T, w *framework.Webhook) []string {
	t.Helper()
	_, body, err := w.Metrics()
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "dualstack_webhook_pool_addresses{") {
			continue
		}
		_, rest, ok := strings.Cut(line, `pool="`)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, `"`)
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
