package framework

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CertPEM is the PEM of an httptest TLS server's certificate (self-signed,
// so it is its own CA bundle).
func CertPEM(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// RRProxy is a test's "Service in front of three replicas": an HTTPS
// reverse proxy that sends each admission request to the next replica in
// turn (per request, not per connection: the apiserver keeps connections
// alive, often over HTTP/2, so TCP round-robin would pin it to one replica).
// A replica that cannot be reached is skipped, as endpoints would drop a dead
// pod; the request is retried on the next one. It times every forwarded
// request, which is the admission latency the apiserver sees minus loopback.
type RRProxy struct {
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

// NewRRProxy starts a proxy in front of the given webhooks (their CAs are
// trusted together).
func NewRRProxy(t testing.TB, hooks []*Webhook) *RRProxy {
	t.Helper()
	p := &RRProxy{served: make([]int, len(hooks)), latency: map[string][]time.Duration{}}
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
func (p *RRProxy) newClient() error {
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

// Replace puts a restarted replica (new port, new CA) in place of backend i.
func (p *RRProxy) Replace(i int, w *Webhook) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends[i], p.cas[i] = w.URL, w.CABundle
	return p.newClient()
}

// URL is the proxy's base URL.
func (p *RRProxy) URL() string { return p.srv.URL }

// CABundle is the proxy's serving certificate, to register it with.
func (p *RRProxy) CABundle() []byte { return CertPEM(p.srv) }

func (p *RRProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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

// Stats returns a copy of the per-replica counts and the failovers.
func (p *RRProxy) Stats() (served []int, failovers int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.served...), p.failovers
}

// TakeLatencies returns and clears the latencies recorded for path.
func (p *RRProxy) TakeLatencies(path string) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.latency[path]
	delete(p.latency, path)
	return out
}

// Percentile of sorted-in-place durations (nearest rank).
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(q*float64(len(ds))+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
}
