package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// The replicas' flags: short grace and resync so that a row settles in
// seconds; a retention far longer than any row, so every sticky address
// must still be there at the end.
const (
	stateNS      = "dsw-faults-state"
	poolsCM      = "dualstack-webhook-pools"
	pendingGrace = 5 * time.Second
	leaseName    = "dualstack-webhook-reconciler"
)

var replicaFlags = []string{
	"--leader-election=true",
	"--pending-grace", pendingGrace.String(),
	"--retention", "10m",
	"--reconcile-interval", "1s",
}

var prereqErr error

func TestMain(m *testing.M) {
	prereqErr = framework.PrereqOwnControlPlane("the fault suite restarts its own control planes and webhook processes")
	os.Exit(m.Run())
}

// long skips the rows `make test` leaves to `make faults`.
func long(t *testing.T) {
	t.Helper()
	if os.Getenv("E2E_FAULTS") == "" {
		t.Skip("a `make faults` row (E2E_FAULTS=1): too long for `make test`")
	}
}

// clusterOptions shape a cluster.
type clusterOptions struct {
	// viaProxy: replica 0 reaches the apiserver through a TCPProxy the
	// test controls (cluster.kproxy).
	viaProxy bool
	// direct: replica 0 is also registered alone for the namespaces
	// labelled ScopeLabel=<name>-direct, so the apiserver keeps sending
	// it admissions whatever its readiness says.
	direct bool
	// replica0Args are extra flags of replica 0.
	replica0Args []string
	// replica0Leads: replica 0 starts first and holds the reconciler
	// Lease before the others start.
	replica0Leads bool
}

// cluster is a control plane with three replicas behind one registration.
type cluster struct {
	env    *framework.Env
	c      kubernetes.Interface
	hooks  []*framework.Webhook
	front  *frontProxy
	kproxy *framework.TCPProxy
	scope  string
	// opts are how each replica was started (restart starts one alike);
	// retired are the processes restart replaced.
	opts     []framework.WebhookOptions
	retired  []*framework.Webhook
	restarts int
}

func startCluster(t *testing.T, name string, o clusterOptions) *cluster {
	t.Helper()
	framework.NeedPrereq(t, prereqErr)
	// Generous: on a shared 2-core machine an apiserver has been seen to
	// need three minutes to start.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	env, err := framework.NewLocalEnv(ctx, "faults-"+name, framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs})
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	cl := &cluster{env: env, c: env.Client, scope: "faults-" + name}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, w := range append(cl.hooks, cl.retired...) {
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.Stop() }()
		}
		wg.Wait()
		if cl.kproxy != nil {
			_ = cl.kproxy.Close()
		}
		if err := env.Close(t.Failed()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if _, err := cl.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stateNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.CoreV1().ConfigMaps(stateNS).Create(ctx, poolsConfigMap(framework.BulkPoolsDoc("bulk")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bin, err := framework.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig0 := env.Kubeconfig
	if o.viaProxy {
		u, err := url.Parse(env.Config.Host)
		if err != nil {
			t.Fatal(err)
		}
		if cl.kproxy, err = framework.StartTCPProxy(u.Host); err != nil {
			t.Fatal(err)
		}
		kubeconfig0 = filepath.Join(env.Artifacts, "replica-0.kubeconfig")
		if err := framework.KubeconfigVia(env.Kubeconfig, kubeconfig0, "https://"+cl.kproxy.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		kc, args := env.Kubeconfig, append([]string(nil), replicaFlags...)
		if i == 0 {
			kc, args = kubeconfig0, append(args, o.replica0Args...)
		}
		wo := framework.WebhookOptions{
			Binary: bin, Name: fmt.Sprintf("replica-%d", i), Dir: env.Artifacts, Kubeconfig: kc,
			ServiceCIDRs: framework.DualStackCIDRs, Namespace: stateNS, ExtraArgs: args,
			Env: []string{fmt.Sprintf("POD_NAME=replica-%d", i)},
		}
		w, err := framework.StartWebhook(ctx, wo)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		cl.hooks = append(cl.hooks, w)
		cl.opts = append(cl.opts, wo)
		if i == 0 && o.replica0Leads {
			eventually(t, 60*time.Second, "replica 0 holds the reconciler Lease", func(ctx context.Context) (bool, string) {
				h := cl.leaseHolder(ctx)
				return strings.HasPrefix(h, "replica-0_"), "holder " + h
			})
		}
	}
	cl.front = newFrontProxy(t, cl.hooks)
	register(t, cl.c, cl.scope, cl.front.URL(), cl.front.CABundle())
	if o.direct {
		register(t, cl.c, cl.scope+"-direct", cl.hooks[0].URL, cl.hooks[0].CABundle)
	}
	t.Logf("3 replicas behind %s ready in %s (logs in %s)", cl.front.URL(), time.Since(start).Round(time.Millisecond), env.Artifacts)
	return cl
}

// restart replaces replica i with a new process started alike, as a
// rolling update does: the old one gets SIGTERM and finishes its graceful
// shutdown while the new one starts; once the new one is ready it takes
// the old one's place behind the front proxy and in cl.hooks.
func (cl *cluster) restart(t *testing.T, i int) *framework.Webhook {
	t.Helper()
	old := cl.hooks[i]
	if err := old.Terminate(); err != nil {
		t.Fatalf("replica %d: %v", i, err)
	}
	cl.retired = append(cl.retired, old)
	cl.restarts++
	o := cl.opts[i]
	o.Name = fmt.Sprintf("replica-%d-restart-%d", i, cl.restarts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := framework.StartWebhook(ctx, o)
	if err != nil {
		t.Fatalf("restarting replica %d: %v", i, err)
	}
	if err := cl.front.replace(i, w); err != nil {
		t.Fatal(err)
	}
	cl.hooks[i] = w
	return w
}

func (cl *cluster) leaseHolder(ctx context.Context) string {
	l, err := cl.c.CoordinationV1().Leases(stateNS).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// namespaces creates n namespaces served through scope.
func (cl *cluster) namespaces(t *testing.T, scope, prefix string, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		ns, err := framework.Namespace(context.Background(), cl.c, fmt.Sprintf("%s%d", prefix, i), map[string]string{framework.ScopeLabel: scope}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ns)
	}
	return out
}

func poolsConfigMap(doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: stateNS, Name: poolsCM, Labels: map[string]string{"dualstack-webhook.io/pools": "true"}},
		Data:       map[string]string{"pools.yaml": doc},
	}
}

// register registers base for Services in namespaces labelled
// ScopeLabel=name and waits until the apiserver calls it.
func register(t *testing.T, c kubernetes.Interface, name, base string, ca []byte) {
	t.Helper()
	ctx := context.Background()
	reg := framework.Registration{Name: name, URL: base, CABundle: ca}
	if err := framework.Register(ctx, c, reg); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	t.Cleanup(func() { _ = framework.Unregister(context.Background(), c, reg) })
	ns, err := framework.Namespace(ctx, c, "probe-"+name, map[string]string{framework.ScopeLabel: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitEffective(ctx, c, ns, reg.MutatingName(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// frontProxy is the test's Service in front of the replicas: an HTTPS
// reverse proxy sending each admission request to the next ready replica
// (per request: the apiserver keeps its connections alive). Readiness is
// each replica's /readyz, polled twice a second, as endpoints follow a
// pod's readiness probe; a replica that cannot be reached is skipped too.
type frontProxy struct {
	srv   *httptest.Server
	next  atomic.Uint64
	ready []atomic.Bool
	stop  chan struct{}

	// bmu guards the backends, which replace changes (a restarted
	// replica: new port, new CA).
	bmu      sync.RWMutex
	hooks    []*framework.Webhook
	backends []string
	client   *http.Client

	mu     sync.Mutex
	served []int
}

func newFrontProxy(t *testing.T, hooks []*framework.Webhook) *frontProxy {
	t.Helper()
	p := &frontProxy{hooks: slices.Clone(hooks), served: make([]int, len(hooks)), ready: make([]atomic.Bool, len(hooks)), stop: make(chan struct{})}
	for i, w := range hooks {
		p.backends = append(p.backends, w.URL)
		p.ready[i].Store(true)
	}
	var err error
	if p.client, err = backendClient(hooks); err != nil {
		t.Fatal(err)
	}
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.EnableHTTP2 = true
	p.srv.StartTLS()
	go p.watchReadiness()
	t.Cleanup(func() { close(p.stop); p.srv.Close() })
	return p
}

// backendClient trusts the serving CAs of hooks.
func backendClient(hooks []*framework.Webhook) (*http.Client, error) {
	pool := x509.NewCertPool()
	for _, w := range hooks {
		if !pool.AppendCertsFromPEM(w.CABundle) {
			return nil, fmt.Errorf("webhook %s: bad CA bundle", w.URL)
		}
	}
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64},
	}, nil
}

// replace puts w (a restarted replica) in place of backend i, as a
// rolling update replaces a pod behind the Service; its served count
// starts again from 0.
func (p *frontProxy) replace(i int, w *framework.Webhook) error {
	p.bmu.Lock()
	defer p.bmu.Unlock()
	hooks := slices.Clone(p.hooks)
	hooks[i] = w
	client, err := backendClient(hooks)
	if err != nil {
		return err
	}
	p.hooks, p.client = hooks, client
	p.backends = slices.Clone(p.backends)
	p.backends[i] = w.URL
	p.ready[i].Store(true)
	p.mu.Lock()
	p.served[i] = 0
	p.mu.Unlock()
	return nil
}

func (p *frontProxy) watchReadiness() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.bmu.RLock()
		hooks := p.hooks
		p.bmu.RUnlock()
		for i, w := range hooks {
			code, _, err := w.Get("/readyz")
			p.ready[i].Store(err == nil && code == http.StatusOK)
		}
	}
}

func (p *frontProxy) URL() string { return p.srv.URL }
func (p *frontProxy) CABundle() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

func (p *frontProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.bmu.RLock()
	backends, client := p.backends, p.client
	p.bmu.RUnlock()
	start := int(p.next.Add(1))
	order := make([]int, 0, len(backends))
	for k := range backends {
		if b := (start + k) % len(backends); p.ready[b].Load() {
			order = append(order, b)
		}
	}
	if len(order) == 0 { // no endpoint ready: try them all rather than none
		for k := range backends {
			order = append(order, (start+k)%len(backends))
		}
	}
	var lastErr error
	for _, b := range order {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, backends[b]+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		p.mu.Lock()
		p.served[b]++
		p.mu.Unlock()
		if v := resp.Header.Get("Content-Type"); v != "" {
			w.Header().Set("Content-Type", v)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
		return
	}
	http.Error(w, fmt.Sprintf("no replica answered: %v", lastErr), http.StatusBadGateway)
}

func (p *frontProxy) stats() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.served...)
}

// eventually is framework.Eventually, logging how long the condition took
// (the rows report recovery times).
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) time.Duration {
	t.Helper()
	took := framework.Eventually(t, timeout, what, cond)
	t.Logf("%s: after %s", what, took.Round(10*time.Millisecond))
	return took
}

// metric sums the samples of a metric family on a replica whose labels
// contain every one of labels ("name" alone: every sample).
func metric(t *testing.T, w *framework.Webhook, name string, labels ...string) (float64, bool) {
	t.Helper()
	code, body, err := w.Metrics()
	if err != nil || code != http.StatusOK {
		return 0, false
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
