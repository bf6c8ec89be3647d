package serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
)

// syncBuffer is a goroutine-safe bytes.Buffer for captured output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevServesTheExampleAndIsReadyFast runs `serve --dev` end to end:
// ready well under a second, banner with a working curl line, the legacy
// example patched, metrics served, clean shutdown on cancel.
func TestDevServesTheExampleAndIsReadyFast(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cfg, err := ParseConfig([]string{"--dev", "--dev-ca-file", caFile}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := net.Listen("tcp", "127.0.0.1:0")
	ml, _ := net.Listen("tcp", "127.0.0.1:0")
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- RunWith(ctx, cfg, zap.NewNop(), &out, Listeners{Webhook: wl, Metrics: ml}) }()

	pem, err := waitForFile(caFile, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	_, port, _ := net.SplitHostPort(wl.Addr().String())
	base := "https://localhost:" + port
	var ready time.Duration
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ready = time.Since(start)
				break
			}
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("not ready after 3s: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ready > time.Second {
		t.Errorf("ready after %s, want well under a second", ready)
	}
	t.Logf("--dev ready after %s", ready)

	banner := out.String()
	wantCurl := "curl --cacert " + caFile + " -H 'Content-Type: application/json' --data @examples/admissionreview-legacy.json " + base + "/mutate"
	if !strings.Contains(banner, wantCurl) {
		t.Errorf("banner lacks the curl line %q:\n%s", wantCurl, banner)
	}

	body, err := os.ReadFile("../../examples/admissionreview-legacy.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post(base+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var review admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&review)
	resp.Body.Close()
	if err != nil || review.Response == nil || !review.Response.Allowed || review.Response.Patch == nil {
		t.Fatalf("legacy example not patched: %v %+v", err, review.Response)
	}
	// --dev pins: the lowest address of the IPv6 static band (the example
	// is a dry run, so nothing is reserved: the pool gauge below stays free).
	if !strings.Contains(string(review.Response.Patch), `{"op":"add","path":"/spec/clusterIPs","value":["fd00:10:96::1"]}`) {
		t.Errorf("legacy example not pinned: %s", review.Response.Patch)
	}

	mresp, err := http.Get("http://" + ml.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`dualstack_webhook_http_requests_total{endpoint="mutate",outcome="patched"} 1`, "dualstack_webhook_certificate_expiration_timestamp_seconds", "go_goroutines",
		`dualstack_webhook_pool_addresses{family="IPv6",pool="static-band",state="free"} 256`} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(string(mb), "pool_addresses"))
		}
	}
	// Profiles only with --profiling (TestProfiling).
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code := getStatus(t, "http://"+ml.Addr().String()+path); code != http.StatusNotFound {
			t.Errorf("%s without --profiling: %d, want 404", path, code)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestProfiling: --profiling serves net/http/pprof on the metrics listener.
func TestProfiling(t *testing.T) {
	cfg, err := ParseConfig([]string{"--dev", "--profiling", "--dev-ca-file", filepath.Join(t.TempDir(), "ca.pem")}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := net.Listen("tcp", "127.0.0.1:0")
	ml, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, cfg, zap.NewNop(), io.Discard, Listeners{Webhook: wl, Metrics: ml}) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ml.Addr().String()
	deadline := time.Now().Add(3 * time.Second)
	for getStatus(t, base+"/metrics") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("metrics listener not serving after 3s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		if code := getStatus(t, base+path); code != http.StatusOK {
			t.Errorf("%s with --profiling: %d, want 200", path, code)
		}
	}
}

// getStatus GETs url and returns the status code (0 if unreachable).
func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func waitForFile(path string, d time.Duration) ([]byte, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			return b, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunFailsOnABusyPort(t *testing.T) {
	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	cfg, err := ParseConfig([]string{"--dev", "--dev-ca-file", filepath.Join(t.TempDir(), "ca.pem"),
		"--listen", busy.Addr().String(), "--metrics-listen", ""}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg, zap.NewNop(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("Run = %v, want a --listen error", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDevRefusesARestrictedPoolToOtherNamespaces runs `serve --dev
// --pools-file` with a pool limited to namespace payments and posts the
// reviews a tenant of namespace shop would cause: naming the pool and asking
// for one of its addresses are denied with the pool's audience; the
// payments Service gets its address.
func TestDevRefusesARestrictedPoolToOtherNamespaces(t *testing.T) {
	dir := t.TempDir()
	poolsFile := filepath.Join(dir, "pools.yaml")
	doc := `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses: {ipv4: ["10.96.0.16-10.96.0.31"], ipv6: ["fd00:10:96::10-fd00:10:96::1f"]}
- name: payments
  namespaces: [payments]
  addresses: {ipv4: ["10.96.0.200-10.96.0.250"], ipv6: ["fd00:10:96::200-fd00:10:96::250"]}
`
	if err := os.WriteFile(poolsFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	cfg, err := ParseConfig([]string{"--dev", "--dev-ca-file", caFile, "--pools-file", poolsFile, "--service-cidrs", "10.96.0.0/16,fd00:10:96::/108"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, cfg, zap.NewNop(), io.Discard, Listeners{Webhook: wl}) }()
	defer func() {
		cancel()
		<-done
	}()
	pem, err := waitForFile(caFile, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	_, port, _ := net.SplitHostPort(wl.Addr().String())
	base := "https://localhost:" + port
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := client.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("--dev not ready after 5s")
		}
	}
	post := func(uid, ns, name, meta, spec string) *admissionv1.AdmissionResponse {
		t.Helper()
		body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"` + uid + `","kind":{"group":"","version":"v1","kind":"Service"},` +
			`"resource":{"group":"","version":"v1","resource":"services"},"namespace":"` + ns + `","name":"` + name + `","operation":"CREATE","userInfo":{"username":"alice"},` +
			`"object":{"apiVersion":"v1","kind":"Service","metadata":{"name":"` + name + `","namespace":"` + ns + `"` + meta + `},` +
			`"spec":{"type":"ClusterIP","ipFamilyPolicy":"PreferDualStack","selector":{"app":"x"},"ports":[{"port":80}]` + spec + `}}}}`
		resp, err := client.Post(base+"/mutate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || review.Response == nil {
			t.Fatalf("decoding the review: %v", err)
		}
		return review.Response
	}
	annotated := `,"annotations":{"dualstack-webhook.io/pool":"payments"}`
	for _, tc := range []struct {
		what, uid, ns, name, meta, spec, want string
		allowed                               bool
	}{
		{"pool named from shop", "u1", "shop", "web", annotated, "", `metadata.annotations[dualstack-webhook.io/pool]: Forbidden: pool "payments" serves only namespaces [payments]; shop/web is not one of them`, false},
		{"IPv4 address of the pool asked from shop", "u2", "shop", "web", "", `,"clusterIP":"10.96.0.210"`, `spec.clusterIPs: Forbidden: IP 10.96.0.210 belongs to pool "payments", which serves only namespaces [payments]; shop/web is not one of them`, false},
		{"IPv6 address of the pool asked from shop", "u3", "shop", "web", "", `,"ipFamilies":["IPv6"],"clusterIP":"fd00:10:96::210"`, `IP fd00:10:96::210 belongs to pool "payments"`, false},
		{"pool named from payments", "u4", "payments", "api", annotated, "", `"value":"10.96.0.200"`, true},
		{"default pool from shop", "u5", "shop", "web", "", "", `"value":"10.96.0.16"`, true},
	} {
		resp := post(tc.uid, tc.ns, tc.name, tc.meta, tc.spec)
		if resp.Allowed != tc.allowed {
			t.Errorf("%s: allowed = %v, want %v (%+v)", tc.what, resp.Allowed, tc.allowed, resp.Result)
			continue
		}
		got := string(resp.Patch)
		if !tc.allowed {
			if resp.Result == nil || resp.Result.Code != 422 {
				t.Errorf("%s: status %+v, want 422", tc.what, resp.Result)
				continue
			}
			got = resp.Result.Message
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q lacks %q", tc.what, got, tc.want)
		}
	}
}
