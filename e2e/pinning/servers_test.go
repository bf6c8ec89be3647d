package pinning

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// denyLabel on a Service makes the test's "later" validating webhook deny it.
const denyLabel = "e2e-later-deny"

// denyWebhook is a tiny HTTPS validating webhook that denies every Service
// labelled denyLabel=true: the "later webhook" whose verdict the pinning
// webhook cannot know when it reserves.
type denyWebhook struct {
	srv     *httptest.Server
	message string
	n       atomic.Int64
}

func (d *denyWebhook) calls() int64 { return d.n.Load() }

// startDenyWebhook serves and registers the deny webhook for namespaces
// labelled ScopeLabel=scope, waits until the apiserver calls it, and
// unregisters it when the test ends.
func startDenyWebhook(t *testing.T, c kubernetes.Interface, name, scope string) *denyWebhook {
	t.Helper()
	d := &denyWebhook{message: "denied by the e2e later webhook " + name}
	d.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		d.n.Add(1)
		review.Response = &admissionv1.AdmissionResponse{
			UID:     review.Request.UID,
			Allowed: false,
			Result:  &metav1.Status{Code: http.StatusForbidden, Message: d.message},
		}
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	}))
	t.Cleanup(d.srv.Close)

	url := d.srv.URL + "/deny"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-later-deny-" + name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "deny." + name + ".e2e.dualstack-webhook.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: certPEM(d.srv)},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{framework.ScopeLabel: scope}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{denyLabel: "true"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	ctx := context.Background()
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register the later webhook: %v", err)
	}
	t.Cleanup(func() {
		_ = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
	// Effective once a dry-run create of a labelled Service is denied by it.
	ns, err := framework.Namespace(ctx, c, "probe-deny", map[string]string{framework.ScopeLabel: scope}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Services(ns).Create(ctx, newService("probe", withLabel(denyLabel, "true")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		last = errText(err)
		return err != nil && strings.Contains(err.Error(), d.message), nil
	})
	if err != nil {
		t.Fatalf("later webhook not effective: %v (last answer: %s)", err, last)
	}
	return d
}

// certPEM is the PEM of an httptest TLS server's certificate (self-signed,
// so it is its own CA bundle).
func certPEM(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// rrProxy is the test's "Service in front of three replicas": an HTTPS
// reverse proxy that sends each admission request to the next replica in
// turn (per request, not per connection: the apiserver keeps connections
// alive, often over HTTP/2, so TCP round-robin would pin it to one replica).
// A replica that cannot be reached is skipped, as endpoints would drop a dead
// pod; the request is retried on the next one. It times every forwarded
// request, which is the admission latency the apiserver sees minus loopback.
type rrProxy struct {
	srv  *httptest.Server
	next atomic.Uint64

	mu        sync.Mutex
	backends  []string
	cas       [][]byte
	client    *http.Client
	served    []int
	failovers int
	latency   map[string][]time.Duration // by path
}

// newRRProxy starts a proxy in front of the given webhooks (their CAs are
// trusted together).
func newRRProxy(t testing.TB, hooks []*framework.Webhook) *rrProxy {
	t.Helper()
	p := &rrProxy{served: make([]int, len(hooks)), latency: map[string][]time.Duration{}}
	for _, w := range hooks {
		p.backends = append(p.backends, w.URL)
		p.cas = append(p.cas, w.CABundle)
	}
	if err := p.newClient(); err != nil {
		t.Fatal(err)
	}
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.EnableHTTP2 = true
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

// newClient (re)builds the client trusting every backend's CA; p.mu held
// or p not yet shared.
func (p *rrProxy) newClient() error {
	pool := x509.NewCertPool()
	for i, ca := range p.cas {
		if !pool.AppendCertsFromPEM(ca) {
			return fmt.Errorf("webhook %s: bad CA bundle", p.backends[i])
		}
	}
	p.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 256,
			ForceAttemptHTTP2:   true,
		},
	}
	return nil
}

// replace puts a restarted replica (new port, new CA) in place of backend i.
func (p *rrProxy) replace(i int, w *framework.Webhook) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends[i], p.cas[i] = w.URL, w.CABundle
	return p.newClient()
}

// URL is the proxy's base URL.
func (p *rrProxy) URL() string { return p.srv.URL }

// CABundle is the proxy's serving certificate, to register it with.
func (p *rrProxy) CABundle() []byte { return certPEM(p.srv) }

func (p *rrProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	start := int(p.next.Add(1))
	p.mu.Lock()
	backends, client := append([]string(nil), p.backends...), p.client
	p.mu.Unlock()
	var lastErr error
	for k := range backends {
		b := (start + k) % len(backends)
		req, err := http.NewRequestWithContext(r.Context(), r.Method, backends[b]+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		req.Header.Set("Accept", r.Header.Get("Accept"))
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			p.mu.Lock()
			p.failovers++
			p.mu.Unlock()
			continue
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			p.mu.Lock()
			p.failovers++
			p.mu.Unlock()
			continue
		}
		d := time.Since(t0)
		p.mu.Lock()
		p.served[b]++
		p.latency[r.URL.Path] = append(p.latency[r.URL.Path], d)
		p.mu.Unlock()
		for _, h := range []string{"Content-Type"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
		return
	}
	http.Error(w, fmt.Sprintf("no replica answered: %v", lastErr), http.StatusBadGateway)
}

// stats returns a copy of the per-replica counts and the failovers.
func (p *rrProxy) stats() (served []int, failovers int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.served...), p.failovers
}

// takeLatencies returns and clears the latencies recorded for path.
func (p *rrProxy) takeLatencies(path string) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.latency[path]
	delete(p.latency, path)
	return out
}

// percentile of sorted-in-place durations (nearest rank).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(q*float64(len(ds))+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
}

// registerServices registers base (/mutate, /validate) for Services in
// namespaces labelled ScopeLabel=name and waits until it is effective.
func registerServices(t testing.TB, c kubernetes.Interface, name, base string, ca []byte) framework.Registration {
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
	return reg
}

// isConflict reports an optimistic-concurrency Conflict.
func isConflict(err error) bool { return apierrors.IsConflict(err) }

// poolsConfigMap is a pools ConfigMap as the chart's guard selects it.
func poolsConfigMap(ns, name, doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"dualstack-webhook.io/pools": "true"}},
		Data:       map[string]string{"pools.yaml": doc},
	}
}
