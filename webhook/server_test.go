package webhook

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/certs"
)

// serveEnv runs Serve on a loopback port with a self-signed certificate.
type serveEnv struct {
	addr    string
	roots   *x509.CertPool
	cancel  context.CancelFunc
	done    chan error
	drained atomic.Bool
}

func startServe(t *testing.T, h http.Handler, delay time.Duration) *serveEnv {
	t.Helper()
	src, err := certs.NewSelfSigned(certs.DevHosts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &serveEnv{addr: ln.Addr().String(), roots: x509.NewCertPool(), done: make(chan error, 1)}
	e.roots.AppendCertsFromPEM(src.CAPEM())
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		e.done <- Serve(ctx, ServeOptions{
			Listener:       ln,
			GetCertificate: src.GetCertificate,
			Handler:        h,
			BeforeShutdown: func() { e.drained.Store(true) },
			ShutdownDelay:  delay,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return e
}

// conn is one raw keep-alive client connection.
type conn struct {
	c *tls.Conn
	r *bufio.Reader
}

func (e *serveEnv) dial(t *testing.T, cfg *tls.Config) (*conn, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs, cfg.ServerName = e.roots, "localhost"
	c, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}, nil
}

func (c *conn) get(t *testing.T, path string) *http.Response {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Time{}) // closedByServer may have set one
	req, _ := http.NewRequest(http.MethodGet, "https://localhost"+path, nil)
	if err := req.Write(c.c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// closedByServer reports whether the server closed the connection (EOF
// within the timeout) rather than leaving it open.
func (c *conn) closedByServer(timeout time.Duration) bool {
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	_, err := c.r.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func TestGracefulShutdownDrainsInFlightAndClosesKeepAlives(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("fast")) })
	mux.HandleFunc("/empty", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		_, _ = w.Write([]byte("slow"))
	})
	// Long enough for the steps below to fit inside it on a loaded machine;
	// waits for an expected close are generous, waits that must see nothing
	// are short (they cannot fail spuriously).
	const delay = 3 * time.Second
	e := startServe(t, mux, delay)

	// reused: a pooled connection the apiserver goes on using; idle: one it
	// leaves at the bottom of its pool; empty: answered without a body.
	var reused, idle, empty *conn
	for _, c := range []**conn{&reused, &idle, &empty} {
		var err error
		if *c, err = e.dial(t, nil); err != nil {
			t.Fatal(err)
		}
		if resp := (*c).get(t, "/fast"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("before shutdown: status %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	if reused.closedByServer(50 * time.Millisecond) {
		t.Fatal("keep-alive connection closed before shutdown")
	}

	busy, err := e.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://localhost/slow", nil)
	if err := req.Write(busy.c); err != nil {
		t.Fatal(err)
	}
	<-started

	e.cancel() // SIGTERM
	shutdownAt := time.Now()
	deadline := shutdownAt.Add(5 * time.Second)
	for !e.drained.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !e.drained.Load() {
		t.Fatal("readiness was not failed on shutdown")
	}
	// An idle pooled connection is not closed under the client's feet: a
	// POST written to it in that instant would fail with "broken pipe".
	// Its next answer closes it instead.
	if reused.closedByServer(100 * time.Millisecond) {
		t.Fatal("idle keep-alive connection closed by the server while the client may still be writing to it")
	}
	if resp := reused.get(t, "/fast"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("reused during delay: status %d, Connection: close = %v", resp.StatusCode, resp.Close)
	}
	if !reused.closedByServer(5 * time.Second) {
		t.Error("connection answered with Connection: close left open")
	}
	if resp := empty.get(t, "/empty"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("empty answer during delay: status %d, Connection: close = %v", resp.StatusCode, resp.Close)
	}
	// During the delay the listener still accepts, and answers with
	// Connection: close.
	late, err := e.dial(t, nil)
	if err != nil {
		t.Fatalf("listener closed during the shutdown delay: %v", err)
	}
	if resp := late.get(t, "/fast"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("during delay: status %d, Connection: close = %v", resp.StatusCode, resp.Close)
	}

	// The in-flight review completes, with Connection: close.
	close(release)
	resp, err := http.ReadResponse(busy.r, req)
	if err != nil {
		t.Fatalf("in-flight request lost: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "slow" || !resp.Close {
		t.Errorf("in-flight: status %d body %q close %v", resp.StatusCode, body, resp.Close)
	}
	if !busy.closedByServer(5 * time.Second) {
		t.Error("connection of the drained request left open")
	}
	// The connection left idle all along is closed when the delay ends.
	if !idle.closedByServer(delay + 5*time.Second) {
		t.Error("idle connection still open after the shutdown delay")
	} else if waited := time.Since(shutdownAt); waited < delay {
		t.Errorf("idle connection closed %v after shutdown began, before the %v delay ended", waited, delay)
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		e.done <- nil // for Cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after draining")
	}
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Error("listener still accepting after shutdown")
	}
}

func TestServeTLSSettings(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {})
	e := startServe(t, mux, 0)
	tests := map[string]struct {
		cfg       *tls.Config
		wantErr   bool
		wantProto string
	}{
		"TLS 1.1 is refused":  {&tls.Config{MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}, true, ""},
		"TLS 1.2 is accepted": {&tls.Config{MaxVersion: tls.VersionTLS12}, false, ""},
		"TLS 1.2 with AES-GCM only is accepted": {&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}, false, ""},
		"TLS 1.2 with CBC-SHA1 suites only is refused": {&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}}, true, ""},
		"a client offering h2 gets http/1.1": {&tls.Config{NextProtos: []string{"h2", "http/1.1"}}, false, "http/1.1"},
		"TLS 1.3 is accepted (Go's default)": {&tls.Config{}, false, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := e.dial(t, tc.cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.c.ConnectionState().NegotiatedProtocol; got != tc.wantProto {
				t.Errorf("ALPN = %q, want %q", got, tc.wantProto)
			}
		})
	}
}

func TestServeReturnsListenerErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // Serve cannot accept: must return, not hang
	src, _ := certs.NewSelfSigned(certs.DevHosts)
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), ServeOptions{Listener: ln, GetCertificate: src.GetCertificate, Handler: http.NotFoundHandler()})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve = nil on a closed listener")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve hung on a broken listener")
	}
}
