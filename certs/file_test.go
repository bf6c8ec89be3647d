package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testPKI is a CA and helpers to mint serving pairs signed by it.
type testPKI struct {
	t  *testing.T
	ca *keyPair
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, err := newCA("test-ca", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, ca: ca}
}

func (p *testPKI) leaf(validFor time.Duration) *keyPair {
	p.t.Helper()
	now := time.Now()
	if validFor < 0 {
		// An already-expired certificate: issued in the past.
		now = now.Add(2 * validFor)
		validFor = -validFor
	}
	kp, err := issueServing(p.ca, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, validFor, now)
	if err != nil {
		p.t.Fatal(err)
	}
	return kp
}

func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.cert)
	return pool
}

// writeAtomic mimics the kubelet's AtomicWriter for a Secret volume: the
// files live in a timestamped directory, `..data` points to it, and the
// visible names are symlinks through `..data`. The swap is a rename of a
// temporary symlink, so readers see either the old or the new pair.
func writeAtomic(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..ts_")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
}

// writePlain writes the pair the naive way, cert first then key, leaving a
// window where the files do not match (and, inside WriteFile, a truncated
// file).
func writePlain(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func servedSerial(t *testing.T, s *FileSource) string {
	t.Helper()
	c, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

func TestNewFileSource(t *testing.T) {
	p := newTestPKI(t)
	good := p.leaf(time.Hour)
	other := p.leaf(time.Hour)
	expired := p.leaf(-time.Hour)

	tests := map[string]struct {
		cert, key []byte
		noFiles   bool
		wantErr   string
	}{
		"a valid pair loads":                        {cert: good.certPEM, key: good.keyPEM},
		"a cert with the key of another is refused": {cert: good.certPEM, key: other.keyPEM, wantErr: "does not match"},
		"a truncated certificate is refused":        {cert: good.certPEM[:len(good.certPEM)/2], key: good.keyPEM, wantErr: "invalid key pair"},
		"an empty key file is refused":              {cert: good.certPEM, key: nil, wantErr: "invalid key pair"},
		"an expired certificate is refused":         {cert: expired.certPEM, key: expired.keyPEM, wantErr: "expired"},
		"missing files are refused":                 {noFiles: true, wantErr: "no such file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if !tc.noFiles {
				writePlain(t, dir, tc.cert, tc.key)
			}
			s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.NewNop())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Ready(); err != nil {
				t.Errorf("Ready() = %v", err)
			}
			if !s.NotAfter().Equal(good.cert.NotAfter) {
				t.Errorf("NotAfter() = %v, want %v", s.NotAfter(), good.cert.NotAfter)
			}
		})
	}

	if _, err := NewFileSource("", "x", nil); err == nil {
		t.Error("empty certificate path accepted")
	}
}

// TestFileSourceKeepsOldPairOnBadReload: every broken state a rotation can
// leave on disk keeps the previous pair served, logs why once, and the next
// good pair is picked up.
func TestFileSourceKeepsOldPairOnBadReload(t *testing.T) {
	p := newTestPKI(t)
	first := p.leaf(time.Hour)
	next := p.leaf(2 * time.Hour)
	expired := p.leaf(-time.Hour)

	tests := map[string]struct{ cert, key []byte }{
		"half-written certificate":         {next.certPEM[:len(next.certPEM)-40], next.keyPEM},
		"new certificate with the old key": {next.certPEM, first.keyPEM},
		"empty certificate":                {nil, next.keyPEM},
		"garbage key":                      {next.certPEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		"expired pair":                     {expired.certPEM, expired.keyPEM},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeAtomic(t, dir, first.certPEM, first.keyPEM)
			core, logs := observer.New(zap.InfoLevel)
			s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			want := first.cert.SerialNumber.String()

			writeAtomic(t, dir, tc.cert, tc.key)
			for range 3 { // the poll finds the same bad content again and again
				if changed, err := s.reload(); changed || err == nil {
					t.Fatalf("reload() = %v, %v; want a refusal", changed, err)
				}
			}
			if got := servedSerial(t, s); got != want {
				t.Fatalf("serving serial %s after a bad reload, want the old %s", got, want)
			}
			if err := s.Ready(); err != nil {
				t.Errorf("Ready() = %v while the old pair is still valid", err)
			}
			if n := logs.FilterMessage("certificate reload refused, still serving the previous certificate").Len(); n != 1 {
				t.Errorf("refusal logged %d times, want once", n)
			}

			writeAtomic(t, dir, next.certPEM, next.keyPEM)
			if changed, err := s.reload(); !changed || err != nil {
				t.Fatalf("reload() of a good pair = %v, %v", changed, err)
			}
			if got := servedSerial(t, s); got != next.cert.SerialNumber.String() {
				t.Errorf("serving %s, want the new pair %s", got, next.cert.SerialNumber)
			}
			if !s.NotAfter().Equal(next.cert.NotAfter) {
				t.Errorf("NotAfter() = %v, want the new pair's %v", s.NotAfter(), next.cert.NotAfter)
			}
		})
	}
}

func TestFileSourceReady(t *testing.T) {
	p := newTestPKI(t)
	kp := p.leaf(time.Hour)
	dir := t.TempDir()
	writePlain(t, dir, kp.certPEM, kp.keyPEM)
	s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		now     time.Time
		wantErr bool
	}{
		"valid now":             {now: time.Now()},
		"one second before end": {now: kp.cert.NotAfter.Add(-time.Second)},
		"at expiry":             {now: kp.cert.NotAfter, wantErr: true},
		"a day after expiry":    {now: kp.cert.NotAfter.Add(24 * time.Hour), wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s.now = func() time.Time { return tc.now }
			if err := s.Ready(); (err != nil) != tc.wantErr {
				t.Errorf("Ready() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	var empty FileSource
	if empty.Ready() == nil || !empty.NotAfter().IsZero() {
		t.Error("a source with nothing loaded reports ready or an expiry")
	}
	if _, err := empty.GetCertificate(nil); err == nil {
		t.Error("GetCertificate with nothing loaded returned no error")
	}
}

// TestFileSourceFollowsSecretVolumeSwap: with polling effectively off, the
// directory watch alone notices the kubelet-style ..data swap.
func TestFileSourceFollowsSecretVolumeSwap(t *testing.T) {
	p := newTestPKI(t)
	first, next := p.leaf(time.Hour), p.leaf(time.Hour)
	dir := t.TempDir()
	writeAtomic(t, dir, first.certPEM, first.keyPEM)
	s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.poll = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond) // let Start register the watch

	writeAtomic(t, dir, next.certPEM, next.keyPEM)
	want := next.cert.SerialNumber.String()
	deadline := time.Now().Add(5 * time.Second)
	for servedSerial(t, s) != want {
		if time.Now().After(deadline) {
			t.Fatal("the watch did not pick up the swapped pair within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFileSourceRotationUnderLoad rotates the files many times, both the
// kubelet way (atomic symlink swap) and the naive way (cert then key, which
// leaves truncated and mismatched files for a moment), while clients open a
// new TLS connection per request. No request may fail, and the clients must
// have seen several certificates, or the test proved nothing.
func TestFileSourceRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	p := newTestPKI(t)
	pairs := make([]*keyPair, 6)
	for i := range pairs {
		pairs[i] = p.leaf(time.Hour)
	}

	for _, mode := range []string{"atomic", "plain"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			write := writeAtomic
			if mode == "plain" {
				write = writePlain
			}
			write(t, dir, pairs[0].certPEM, pairs[0].keyPEM)
			s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			s.poll = 20 * time.Millisecond // the poll races the writer too
			ctx, cancel := context.WithCancel(context.Background())
			started := make(chan error, 1)
			go func() { started <- s.Start(ctx) }()
			defer func() { cancel(); <-started }()

			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "ok")
			}))
			srv.TLS = &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12}
			srv.StartTLS()
			defer srv.Close()

			var (
				requests, failures atomic.Int64
				seenMu             sync.Mutex
				seen               = map[string]bool{}
				firstErr           atomic.Value
				stop               = make(chan struct{})
				wg                 sync.WaitGroup
			)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
						TLSClientConfig:   &tls.Config{RootCAs: p.pool(), ServerName: "localhost"},
						DisableKeepAlives: true, // a handshake per request
					}}
					for {
						select {
						case <-stop:
							return
						default:
						}
						requests.Add(1)
						resp, err := client.Get(srv.URL)
						if err != nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err)
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						if resp.StatusCode != http.StatusOK || resp.TLS == nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Errorf("status %d", resp.StatusCode))
							continue
						}
						seenMu.Lock()
						seen[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
						seenMu.Unlock()
					}
				}()
			}
			for i := 1; i <= 30; i++ {
				time.Sleep(40 * time.Millisecond)
				kp := pairs[i%len(pairs)]
				write(t, dir, kp.certPEM, kp.keyPEM)
			}
			time.Sleep(100 * time.Millisecond)
			close(stop)
			wg.Wait()

			t.Logf("%s: %d requests, %d failed, %d distinct certificates served", mode, requests.Load(), failures.Load(), len(seen))
			if failures.Load() != 0 {
				t.Fatalf("%d of %d requests failed during rotation, first: %v", failures.Load(), requests.Load(), firstErr.Load())
			}
			if len(seen) < 3 {
				t.Fatalf("clients saw only %d certificates: rotation did not happen under load", len(seen))
			}
			if requests.Load() < 100 {
				t.Fatalf("only %d requests: not a load", requests.Load())
			}
		})
	}
}

// TestFileSourcePollsWhatTheWatchCannotSee: the visible files are symlinks
// into a directory that is not watched (hostPath or projected layouts), so
// rewriting the targets raises no event where we watch; the periodic re-read
// must still pick the new pair up.
func TestFileSourcePollsWhatTheWatchCannotSee(t *testing.T) {
	p := newTestPKI(t)
	first, next := p.leaf(time.Hour), p.leaf(time.Hour)
	visible, hidden := t.TempDir(), t.TempDir()
	writePlain(t, hidden, first.certPEM, first.keyPEM)
	for _, n := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join(hidden, n), filepath.Join(visible, n)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewFileSource(filepath.Join(visible, "tls.crt"), filepath.Join(visible, "tls.key"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.poll = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() { cancel(); <-done }()

	writePlain(t, hidden, next.certPEM, next.keyPEM)
	want := next.cert.SerialNumber.String()
	deadline := time.Now().Add(5 * time.Second)
	for servedSerial(t, s) != want {
		if time.Now().After(deadline) {
			t.Fatal("the periodic re-read did not pick up the new pair within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
