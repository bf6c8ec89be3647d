package faults

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// directOp is one create sent through replica 0's own registration.
type directOp struct {
	start, end time.Time
	err        error
}

// prober keeps sending creates to replica 0 through the apiserver (its own
// registration, as endpoints that have not caught up yet would): three at
// once, then one every 300 ms, each in its own goroutine so that a slow
// answer does not slow the rate.
type prober struct {
	wg   sync.WaitGroup
	stop chan struct{}
	mu   sync.Mutex
	ops  []directOp
}

func startProber(cl *cluster, ns, prefix string) *prober {
	p := &prober{stop: make(chan struct{})}
	send := func(n int) {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		o := directOp{start: time.Now()}
		_, o.err = cl.c.CoreV1().Services(ns).Create(ctx, shape(fmt.Sprintf("%s-%d", prefix, n), n), metav1.CreateOptions{})
		o.end = time.Now()
		p.mu.Lock()
		p.ops = append(p.ops, o)
		p.mu.Unlock()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for n := 0; ; n++ {
			p.wg.Add(1)
			go send(n)
			if n < 2 {
				continue
			}
			select {
			case <-p.stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *prober) halt() []directOp {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]directOp(nil), p.ops...)
}

// The webhook's own answers when it cannot use the apiserver: refused at
// once by the gate, or given up at its own deadline.
const (
	msgUnreachable = "apiserver unreachable"
	msgNoAnswer    = "has not answered"
	msgOutOfTime   = "no answer from the apiserver within"
)

// TestReplicaCutOff cuts replica 0 off from the apiserver — its kubeconfig
// points at a TCP proxy the test controls — while the load runs through
// the three replicas and the apiserver keeps sending admissions to replica
// 0 directly: first the proxy black-holes its traffic, then drops it, then
// delays every chunk by 12 s, beyond the registration's timeoutSeconds
// (10 s). In each phase replica 0:
//
//   - admits nothing (a pin needs a write it cannot make; a stale cache
//     must not stand in for it);
//   - answers every admission itself, with its own clear error, before
//     the apiserver gives up (no "failed calling webhook" from the
//     apiserver's timeout);
//   - once its /readyz has gone false (it must), answers at once from its
//     gate ("apiserver unreachable") instead of waiting;
//
// and the load through the readiness-following front proxy recovers once
// replica 0 leaves the endpoints, with nothing handed out twice, leaked or
// lost.
func TestReplicaCutOff(t *testing.T) {
	long(t)
	cl := startCluster(t, "cutoff", clusterOptions{viaProxy: true, direct: true})
	namespaces := cl.namespaces(t, cl.scope, "load", 3)
	direct := cl.namespaces(t, cl.scope+"-direct", "direct", 1)[0]
	readyz := func() int {
		code, _, err := cl.hooks[0].Get("/readyz")
		if err != nil {
			return 0
		}
		return code
	}
	var rows []row
	for i, ph := range []struct {
		name  string
		mode  framework.ProxyMode
		delay time.Duration
	}{
		{"replica 0 cut off from the apiserver (black hole)", framework.ProxyBlackHole, 0},
		{"replica 0 cut off from the apiserver (connections dropped)", framework.ProxyDrop, 0},
		{"apiserver slowed by 12s for replica 0 (timeoutSeconds 10)", framework.ProxyDelay, 12 * time.Second},
	} {
		l := startLoad(cl.c, namespaces, 4, fmt.Sprintf("p%dw", i))
		time.Sleep(4 * time.Second)
		tFault := time.Now()
		cl.kproxy.Set(ph.mode, ph.delay)
		pr := startProber(cl, direct, fmt.Sprintf("d%d", i))
		unready := eventually(t, 30*time.Second, ph.name+": replica 0 /readyz goes false", func(context.Context) (bool, string) {
			c := readyz()
			return c != http.StatusOK, fmt.Sprintf("HTTP %d", c)
		})
		tUnready := tFault.Add(unready)
		time.Sleep(6 * time.Second)
		tHeal := time.Now()
		cl.kproxy.Set(framework.ProxyPass, 0)
		dops := pr.halt()
		eventually(t, 90*time.Second, ph.name+": replica 0 /readyz true again", func(context.Context) (bool, string) {
			c := readyz()
			return c == http.StatusOK, fmt.Sprintf("HTTP %d", c)
		})
		time.Sleep(4 * time.Second)
		ops := l.halt()
		// Replica 0 may hold the reconciler Lease: while it is cut off
		// nothing is confirmed (see load.exempt).
		l.exemptWindow(tFault, time.Now())

		// Replica 0's answers.
		var admitted, notOwn, slowPath int
		var fast []time.Duration
		msgs := map[string]int{}
		for _, o := range dops {
			if o.start.Before(tFault) || !o.start.Before(tHeal) {
				continue
			}
			if o.err == nil {
				switch {
				case o.end.Before(tHeal):
					admitted++
				case o.start.After(tUnready.Add(time.Second)):
					// Held until the apiserver came back, then admitted.
					slowPath++
					t.Errorf("%s: replica 0 was not ready but held a create for %s, until the apiserver was back", ph.name, o.end.Sub(o.start).Round(time.Millisecond))
				}
				continue
			}
			m := o.err.Error()
			msgs[normalize(m)]++
			// The webhook's own answer (its error, whatever the cause:
			// its gate, its deadline, a write refused or reset), not the
			// apiserver giving up on it.
			own := strings.Contains(m, "admission webhook") && strings.Contains(m, "denied the request")
			if !own || strings.Contains(m, "failed calling webhook") {
				notOwn++
				t.Errorf("%s: a create through replica 0 failed without the webhook's own answer: %s", ph.name, m)
				continue
			}
			if o.start.After(tUnready.Add(time.Second)) {
				if !strings.Contains(m, msgUnreachable) && !strings.Contains(m, msgNoAnswer) {
					slowPath++
					t.Errorf("%s: replica 0 was not ready but did not refuse at once: %s", ph.name, m)
				} else {
					fast = append(fast, o.end.Sub(o.start))
				}
			}
		}
		if admitted > 0 {
			t.Errorf("%s: replica 0 admitted %d creates while cut off from the apiserver", ph.name, admitted)
		}
		if len(fast) == 0 {
			t.Errorf("%s: no create reached replica 0 after its /readyz went false", ph.name)
		}
		sort.Slice(fast, func(i, j int) bool { return fast[i] < fast[j] })
		r := tally(ph.name, ops, tFault, time.Time{})
		var direct []string
		for m, n := range msgs {
			direct = append(direct, fmt.Sprintf("%d× %s", n, m))
		}
		sort.Strings(direct)
		note := fmt.Sprintf("/readyz false after %s; through replica 0: %d creates, %d admitted while cut off, %d without its own error, %d not refused at once while unready",
			unready.Round(100*time.Millisecond), len(dops), admitted, notOwn, slowPath)
		if len(fast) > 0 {
			note += fmt.Sprintf(", once unready answered in p50 %s max %s", fast[len(fast)/2].Round(time.Millisecond), fast[len(fast)-1].Round(time.Millisecond))
		}
		_, _, sticky := l.counts()
		r.notes = append(r.notes, note, fmt.Sprintf("reconciler Lease: %s; %d addresses of deleted Services checked sticky (those acquired or given up during the fault not: no confirmation while the reconciler's replica is cut off)", cl.leaseHolder(context.Background()), sticky), "replica 0 said: "+strings.Join(direct, "; "))
		settle(t, cl.c, l, &r, 60*time.Second)
		rows = append(rows, r)
		report(t, r)
	}
	report(t, rows...)
}
