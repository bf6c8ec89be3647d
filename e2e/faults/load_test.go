package faults

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// inBulk: an address of the suite's pool.
var inBulk = framework.InBulkPool

// op is one request of the load, as the client saw it.
type op struct {
	kind       string // create, update, delete
	key        string // namespace/name
	start, end time.Time
	err        error
}

// load is a steady create/update/delete load: each worker keeps a handful
// of its own Services alive, creating (a mix of families), upgrading single
// to dual stack or relabelling, and deleting the oldest, one request at a
// time (no retries: a failed request is what a kubectl user sees).
type load struct {
	prefix     string // of the Service names
	c          kubernetes.Interface
	namespaces []string
	stop       chan struct{}
	wg         sync.WaitGroup

	mu  sync.Mutex
	ops []op
	// addrs: every Service created, its addresses and when it got each.
	addrs map[string]map[netip.Addr]time.Time
	// deleted: Services whose delete succeeded, and when it was sent.
	deleted map[string]time.Time
	// exempt: windows in which the reconciler could not confirm (its
	// replica cut off, the apiserver down): an address acquired or given
	// up then may have stayed pending, and a pending reservation of a
	// deleted Service is collected, not kept sticky.
	exempt [][2]time.Time
}

// exemptWindow excludes [from, to] from the stickiness check.
func (l *load) exemptWindow(from, to time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exempt = append(l.exempt, [2]time.Time{from.Add(-confirmedAfter), to.Add(confirmedAfter)})
}

// exempted: an address got at got and given up at gone falls in a window
// where it may never have been confirmed.
func (l *load) exempted(got, gone time.Time) bool {
	for _, w := range l.exempt {
		if !gone.Before(w[0]) && !got.After(w[1]) {
			return true
		}
	}
	return false
}

// confirmedAfter is how long a Service must have held an address for its
// reservation to be certainly bound (the reconciler syncs on every
// Service event and every second): a Service deleted sooner may leave a
// pending reservation, which is collected rather than kept sticky.
const confirmedAfter = 3 * time.Second

func startLoad(c kubernetes.Interface, namespaces []string, workers int, prefix string) *load {
	l := &load{prefix: prefix, c: c, namespaces: namespaces, stop: make(chan struct{}), addrs: map[string]map[netip.Addr]time.Time{}, deleted: map[string]time.Time{}}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(w)
	}
	return l
}

// shape is the n-th Service's spec: a third dual-stack (both orders),
// some IPv6, the rest the apiserver's default (SingleStack IPv4).
func shape(name string, n int) *corev1.Service {
	switch n % 6 {
	case 0:
		return framework.NewService(name, nil, framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack), framework.WithFamilies(corev1.IPv6Protocol, corev1.IPv4Protocol))
	case 1:
		return framework.NewService(name, nil, framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack))
	case 2:
		return framework.NewService(name, nil, framework.WithFamilies(corev1.IPv6Protocol))
	}
	return framework.NewService(name, nil)
}

func (l *load) worker(w int) {
	defer l.wg.Done()
	ns := l.namespaces[w%len(l.namespaces)]
	var live []string
	// Every other delete waits for a Service old enough that its
	// reservation must be sticky afterwards: on a fast machine the FIFO of
	// live Services turns over in under confirmedAfter, and the stickiness
	// check would then have nothing to check.
	born := map[string]time.Time{}
	deletes := 0
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		switch {
		case len(live) < 5 || n%3 == 0 ||
			(n%3 == 2 && deletes%2 == 0 && time.Since(born[live[0]]) < 2*confirmedAfter):
			name := fmt.Sprintf("%s%d-%d", l.prefix, w, n)
			o := op{kind: "create", key: ns + "/" + name, start: time.Now()}
			sv, err := l.c.CoreV1().Services(ns).Create(ctx, shape(name, n), metav1.CreateOptions{})
			o.end, o.err = time.Now(), err
			if err == nil {
				live = append(live, name)
				born[name] = o.end
				l.record(o, sv)
			} else {
				l.record(o, nil)
			}
		case n%3 == 1:
			name := live[n%len(live)]
			o := op{kind: "update", key: ns + "/" + name, start: time.Now()}
			sv, err := l.c.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				if sv.Spec.IPFamilyPolicy != nil && *sv.Spec.IPFamilyPolicy == corev1.IPFamilyPolicySingleStack {
					p := corev1.IPFamilyPolicyPreferDualStack // upgrade: the secondary is pinned
					sv.Spec.IPFamilyPolicy = &p
				} else {
					if sv.Labels == nil {
						sv.Labels = map[string]string{}
					}
					sv.Labels["touched"] = fmt.Sprint(n)
				}
				sv, err = l.c.CoreV1().Services(ns).Update(ctx, sv, metav1.UpdateOptions{})
			}
			o.end, o.err = time.Now(), err
			if err == nil {
				l.record(o, sv)
			} else {
				l.record(o, nil)
			}
		default:
			name := live[0]
			o := op{kind: "delete", key: ns + "/" + name, start: time.Now()}
			err := l.c.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
			if isNotFound(err) {
				err = nil
			}
			o.end, o.err = time.Now(), err
			if err == nil {
				live = live[1:]
				delete(born, name)
				deletes++
				l.mu.Lock()
				l.deleted[o.key] = o.start
				l.mu.Unlock()
			}
			l.record(o, nil)
		}
		cancel()
		select {
		case <-l.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *load) record(o op, sv *corev1.Service) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, o)
	if sv != nil {
		as := l.addrs[o.key]
		if as == nil {
			as = map[netip.Addr]time.Time{}
			l.addrs[o.key] = as
		}
		for _, s := range sv.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				if _, ok := as[a]; !ok {
					as[a] = o.end
				}
			}
		}
	}
}

// counts are the Services created and deleted, and the addresses of
// deleted Services that must be sticky (held for confirmedAfter or more).
func (l *load) counts() (created, deleted, sticky int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, at := range l.deleted {
		for _, got := range l.addrs[k] {
			if at.Sub(got) >= confirmedAfter && !l.exempted(got, at) {
				sticky++
			}
		}
	}
	return len(l.addrs), len(l.deleted), sticky
}

// halt stops the workers and returns every request made.
func (l *load) halt() []op {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]op(nil), l.ops...)
}

// snapshotOps returns the requests so far.
func (l *load) snapshotOps() []op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]op(nil), l.ops...)
}

// row is one line of the fault table.
type row struct {
	name              string
	total, failed     int
	messages          map[string]int
	recovery          time.Duration
	duplicates, leaks int
	lost              int
	notes             []string
}

var (
	digits = regexp.MustCompile(`[0-9a-f]*[0-9][0-9a-f]*`)
	spaces = regexp.MustCompile(`\s+`)
)

// normalize groups messages that differ only by names, numbers and
// addresses.
func normalize(msg string) string {
	msg = digits.ReplaceAllString(msg, "N")
	msg = spaces.ReplaceAllString(msg, " ")
	if len(msg) > 260 {
		msg = msg[:260] + "…"
	}
	return msg
}

// tally counts the requests that started in [from, to) (zero: no bound),
// their failures by message, and the recovery: from the fault (at from) to
// the end of the last failed request.
func tally(name string, ops []op, from, to time.Time) row {
	r := row{name: name, messages: map[string]int{}}
	for _, o := range ops {
		if (!from.IsZero() && o.start.Before(from)) || (!to.IsZero() && !o.start.Before(to)) {
			continue
		}
		r.total++
		if o.err == nil {
			continue
		}
		r.failed++
		r.messages[o.kind+": "+normalize(o.err.Error())]++
		if d := o.end.Sub(from); !from.IsZero() && d > r.recovery {
			r.recovery = d
		}
	}
	return r
}

func (r row) String() string {
	var msgs []string
	for m, n := range r.messages {
		msgs = append(msgs, fmt.Sprintf("%d× %s", n, m))
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i] > msgs[j] })
	if len(msgs) > 4 {
		msgs = append(msgs[:4], fmt.Sprintf("… (%d more kinds)", len(msgs)-4))
	}
	m := "—"
	if len(msgs) > 0 {
		m = strings.Join(msgs, "; ")
	}
	rec := "—"
	if r.failed > 0 {
		rec = r.recovery.Round(100 * time.Millisecond).String()
	}
	notes := ""
	if len(r.notes) > 0 {
		notes = " | " + strings.Join(r.notes, "; ")
	}
	return fmt.Sprintf("| %s | %d/%d | %s | %s | %d | %d | %d%s |", r.name, r.failed, r.total, m, rec, r.duplicates, r.leaks, r.lost, notes)
}

// reservation is one state ConfigMap.
type reservation struct {
	cm, owner, state string
	ip               netip.Addr
}

func reservations(ctx context.Context, c kubernetes.Interface) (map[netip.Addr]reservation, error) {
	list, err := c.CoreV1().ConfigMaps(stateNS).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]reservation{}
	for _, cm := range list.Items {
		a, _ := netip.ParseAddr(cm.Data["ip"])
		out[a] = reservation{cm: cm.Name, ip: a, owner: cm.Data["namespace"] + "/" + cm.Data["name"], state: cm.Labels[configmap.LabelState]}
	}
	return out, nil
}

// findings are what the state looks like against the load's record.
type findings struct {
	duplicates []string // an address held by two Services
	leaks      []string // a pending/bound reservation no Service holds; an address outside the pool
	// lost: a live Service's address not bound to it; a deleted one's
	// address it held for confirmedAfter or more, not sticky to it.
	lost []string
}

func (f findings) clean() bool { return len(f.duplicates)+len(f.leaks)+len(f.lost) == 0 }

func (f findings) String() string {
	var b strings.Builder
	for _, p := range []struct {
		name string
		l    []string
	}{{"duplicates", f.duplicates}, {"leaks", f.leaks}, {"lost", f.lost}} {
		fmt.Fprintf(&b, "%d %s", len(p.l), p.name)
		for i, s := range p.l {
			if i == 5 {
				fmt.Fprintf(&b, " …")
				break
			}
			b.WriteString(" [" + s + "]")
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// check compares the live Services of the load's namespaces, the
// apiserver's IPAddress objects and the reservations with what the load
// did.
func check(ctx context.Context, c kubernetes.Interface, l *load) (findings, error) {
	var f findings
	res, err := reservations(ctx, c)
	if err != nil {
		return f, err
	}
	holder := map[netip.Addr]string{}
	live := map[string]bool{}
	// Every namespace: Services of a row's other paths (a replica's own
	// registration) hold pool addresses too.
	{
		svcs, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return f, err
		}
		for _, sv := range svcs.Items {
			if sv.Namespace == "default" && sv.Name == "kubernetes" {
				continue
			}
			k := sv.Namespace + "/" + sv.Name
			live[k] = true
			for _, s := range sv.Spec.ClusterIPs {
				a, err := netip.ParseAddr(s)
				if err != nil {
					continue
				}
				if h, ok := holder[a]; ok {
					f.duplicates = append(f.duplicates, fmt.Sprintf("%s held by %s and %s", a, h, k))
					continue
				}
				holder[a] = k
				if !inBulk(a) {
					f.leaks = append(f.leaks, fmt.Sprintf("%s of %s is outside pool bulk (not pinned)", a, k))
					continue
				}
				if r, ok := res[a]; !ok || r.state != "bound" || r.owner != k {
					f.lost = append(f.lost, fmt.Sprintf("%s of live %s: reservation %+v", a, k, r))
				}
			}
		}
	}
	ips, err := c.NetworkingV1().IPAddresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, err
	}
	for _, ip := range ips.Items {
		a, err := netip.ParseAddr(ip.Name)
		if err != nil || !inBulk(a) || ip.Spec.ParentRef == nil {
			continue
		}
		if p := ip.Spec.ParentRef.Namespace + "/" + ip.Spec.ParentRef.Name; holder[a] != p {
			f.duplicates = append(f.duplicates, fmt.Sprintf("IPAddress %s names %s, held by %q", a, p, holder[a]))
		}
	}
	for a, r := range res {
		if r.state == "sticky" {
			continue
		}
		if holder[a] != r.owner {
			f.leaks = append(f.leaks, fmt.Sprintf("%s %s reserved to %s, held by %q", r.state, a, r.owner, holder[a]))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, at := range l.deleted {
		if live[k] {
			continue
		}
		for a, got := range l.addrs[k] {
			if at.Sub(got) < confirmedAfter || l.exempted(got, at) {
				continue // maybe never bound: a pending reservation is not kept
			}
			if r, ok := res[a]; !ok || r.state != "sticky" || r.owner != k {
				f.lost = append(f.lost, fmt.Sprintf("%s of deleted %s: reservation %+v, want sticky to it", a, k, r))
			}
		}
	}
	return f, nil
}

// settle waits until the state is consistent (pending reservations of
// failed creates collected, every pin bound): duplicates fail at once,
// leaks and losses fail after timeout. It fills the row's counts.
func settle(t *testing.T, c kubernetes.Interface, l *load, r *row, timeout time.Duration) {
	t.Helper()
	var f findings
	deadline := time.Now().Add(timeout)
	for {
		var err error
		f, err = check(context.Background(), c, l)
		if err == nil && (f.clean() || len(f.duplicates) > 0) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.duplicates, r.leaks, r.lost = len(f.duplicates), len(f.leaks), len(f.lost)
	if !f.clean() {
		t.Errorf("%s: state not consistent after %s: %s", r.name, timeout, f)
	}
}

// imported sums reservations_imported_total over the replicas: a
// reservation the reconciler had to re-create for a live Service was lost
// on the way.
func imported(t *testing.T, cl *cluster) float64 {
	var n float64
	for _, w := range cl.hooks {
		if w.Running() {
			v, _ := metric(t, w, "dualstack_webhook_reservations_imported_total")
			n += v
		}
	}
	return n
}

// report logs the rows as the table of docs/faults.md.
func report(t *testing.T, rows ...row) {
	t.Helper()
	for _, r := range rows {
		t.Logf("faults row %s", r)
	}
}
