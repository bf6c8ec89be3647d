package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server timeouts. Each cites what bounds it.
const (
	// ReadHeaderTimeout stops slowloris clients; the apiserver sends its
	// headers at once, so seconds are plenty (cert-manager's webhook uses a
	// similar constant, defaultReadHeaderTimeout).
	ReadHeaderTimeout = 10 * time.Second
	// readTimeout / writeTimeout: no review the apiserver still waits for
	// lasts longer than the maximum webhook timeoutSeconds (30 s).
	readTimeout  = 30 * time.Second
	writeTimeout = 35 * time.Second
	// idleTimeout is longer than the apiserver's idle timeout for webhook
	// connections (90 s, http.DefaultTransport via
	// k8s.io/apimachinery/pkg/util/net.SetTransportDefaults), so the client
	// always closes an idle connection first. If the server closed first,
	// a POST the apiserver just wrote to that connection would fail, and a
	// POST is not retried.
	idleTimeout = 120 * time.Second
	// DefaultShutdownTimeout bounds draining in-flight reviews; a review
	// the apiserver waits for lasts at most 30 s.
	DefaultShutdownTimeout = 30 * time.Second
)

// ServeOptions configure Serve.
type ServeOptions struct {
	Log *zap.Logger
	// Listener is the plain TCP listener for the webhook; Serve adds TLS.
	Listener net.Listener
	// GetCertificate supplies the serving certificate per handshake.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Handler serves the TLS endpoints (normally a *Handler).
	Handler http.Handler
	// MetricsListener and MetricsHandler, when both set, serve /metrics in
	// plain HTTP.
	MetricsListener net.Listener
	MetricsHandler  http.Handler
	// BeforeShutdown runs first when ctx ends (Handler.Drain: /readyz
	// fails).
	BeforeShutdown func()
	// ShutdownDelay keeps serving, with keep-alives off, after readiness
	// fails, so endpoints controllers and kube-proxy remove the pod before
	// its listener closes. 0 in --dev.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds draining; 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// TLSConfig is the webhook listener's TLS configuration: TLS 1.2 minimum
// (what the apiserver's webhook client negotiates at least), TLS 1.2 limited
// to forward-secret AEAD suites, and HTTP/1.1 only. HTTP/2 is off on purpose:
// the apiserver's webhook client forces http/1.1 itself (k8s.io/apiserver
// pkg/util/webhook/client.go, "http/2-enabled clients not load-balancing
// concurrent requests to multiple backends", kubernetes#75791), HTTP/1.1
// connection closing is what the graceful shutdown relies on
// (kubernetes#127335), and it removes the HTTP/2 rapid-reset class of
// attacks (CVE-2023-44487) from the surface.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   TLS12CipherSuites,
		GetCertificate: getCert,
		NextProtos:     []string{"http/1.1"},
	}
}

// TLS12CipherSuites are the suites offered to TLS 1.2 clients (TLS 1.3
// suites are not configurable and all AEAD): ECDHE key exchange and AEAD
// ciphers only, for ECDSA and RSA serving keys alike. Go's own TLS 1.2
// default still includes the CBC-SHA1 suites, which no apiserver needs: its
// webhook client is Go with the default (AEAD-first) list.
var TLS12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// NewHTTPServer returns the webhook's http.Server with its timeouts and
// protocols set (exported so benchmarks measure the same server).
func NewHTTPServer(h http.Handler, log *zap.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	errLog, _ := zap.NewStdLogAt(log.Named("http"), zapcore.InfoLevel)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		Protocols:         &protocols,
		ErrorLog:          errLog,
	}
}

// Serve runs the TLS webhook server (and the metrics server) until ctx ends,
// then shuts down gracefully:
//
//  1. BeforeShutdown: /readyz starts failing;
//  2. every response from now on carries "Connection: close", so each
//     connection the apiserver reuses to this terminating pod is closed
//     by its next answer and the apiserver reconnects through the Service
//     to a ready replica (kubernetes#127335: "you MUST make your webhook
//     close the connection ASAP");
//  3. ShutdownDelay, still serving;
//  4. Shutdown: listener closed, connections still idle closed, in-flight
//     reviews drained.
//
// Idle connections are deliberately not closed at step 2
// (http.Server.SetKeepAlivesEnabled(false) would): the apiserver is still
// picking them from its pool, and a POST it writes to a connection the
// server closes in that instant fails with "broken pipe" and is not
// retried, so the Service create fails. A connection answered with
// "Connection: close" is one the client already knows not to reuse. What is
// still idle at step 4 went unused for the whole delay, at the bottom of the
// client's most-recently-used pool.
//
// It returns nil after a clean shutdown, or the first server error.
func Serve(ctx context.Context, o ServeOptions) error {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	var draining atomic.Bool
	srv := NewHTTPServer(closeWhenDraining(o.Handler, &draining), o.Log)
	srv.TLSConfig = TLSConfig(o.GetCertificate)
	errc := make(chan error, 2)
	go func() {
		err := srv.Serve(tls.NewListener(o.Listener, srv.TLSConfig))
		errc <- fmt.Errorf("webhook server: %w", err)
	}()
	var msrv *http.Server
	if o.MetricsListener != nil && o.MetricsHandler != nil {
		msrv = &http.Server{Handler: o.MetricsHandler, ReadHeaderTimeout: ReadHeaderTimeout, IdleTimeout: idleTimeout}
		go func() { errc <- fmt.Errorf("metrics server: %w", msrv.Serve(o.MetricsListener)) }()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		o.Log.Error("server stopped unexpectedly", zap.Error(serveErr))
	}

	o.Log.Info("shutting down: readiness off, answering with Connection: close", zap.Duration("delay", o.ShutdownDelay))
	if o.BeforeShutdown != nil {
		o.BeforeShutdown()
	}
	draining.Store(true)
	if o.ShutdownDelay > 0 && serveErr == nil {
		t := time.NewTimer(o.ShutdownDelay)
		select {
		case <-t.C:
		case serveErr = <-errc:
			t.Stop()
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if msrv != nil {
		// Metrics last, so the final scrape can still see the drain.
		err = errors.Join(err, msrv.Shutdown(sctx))
	}
	if err != nil {
		o.Log.Error("graceful shutdown incomplete", zap.Error(err))
	} else {
		o.Log.Info("shutdown complete")
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errors.Join(serveErr, err)
	}
	return err
}

// closeWhenDraining makes every answer written once draining is set carry
// "Connection: close" (net/http then closes the connection after it),
// including answers to reviews that were already in flight.
func closeWhenDraining(h http.Handler, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &drainWriter{ResponseWriter: w, draining: draining}
		h.ServeHTTP(dw, r)
		if !dw.wroteHeader {
			dw.markClose() // net/http writes the header after we return
		}
	})
}

type drainWriter struct {
	http.ResponseWriter
	draining    *atomic.Bool
	wroteHeader bool
}

func (d *drainWriter) markClose() {
	if d.draining.Load() {
		d.Header().Set("Connection", "close")
	}
}

func (d *drainWriter) WriteHeader(code int) {
	if !d.wroteHeader {
		d.wroteHeader = true
		d.markClose()
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *drainWriter) Write(b []byte) (int, error) {
	if !d.wroteHeader {
		d.WriteHeader(http.StatusOK)
	}
	return d.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (d *drainWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
