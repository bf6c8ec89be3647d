package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultPollInterval is how often FileSource re-reads its files even when no
// filesystem event arrived. cert-manager's own webhook polls every 10 s
// (pkg/server/tls/file_source.go); events make the common case faster, the
// poll covers what inotify misses (files replaced on an overlay that does not
// notify, a watch that failed to register, a kubelet that rewrote ..data while
// we were re-adding the watch).
const DefaultPollInterval = 10 * time.Second

// eventDebounce groups the burst of events one rotation produces (kubelet's
// atomic writer creates a timestamped dir, swaps the ..data symlink, removes
// the old dir; a hand rotation writes the cert then the key) into one reload.
const eventDebounce = 100 * time.Millisecond

// FileSource serves the key pair found in two PEM files and reloads it when
// they change, without a restart. It is the source used with cert-manager,
// whose Secret the kubelet mounts and updates by swapping a `..data` symlink;
// that is why the directories are watched rather than the files.
//
// A reload that reads a half-written file, a certificate that does not match
// the key, or an expired certificate is refused: the previous pair keeps being
// served and the reason is logged (once per distinct content, not on every
// poll).
type FileSource struct {
	certFile, keyFile string
	log               *zap.Logger
	poll              time.Duration
	now               func() time.Time

	cur atomic.Pointer[loadedPair]

	mu       sync.Mutex // serialises reloads; guards the fields below
	lastCert []byte     // bytes of the pair being served, to skip no-op reloads
	lastKey  []byte
	lastBad  string // last refused content+reason, to log a failure once
}

// loadedPair is what a handshake reads: swapped atomically so GetCertificate
// never takes a lock on the hot path.
type loadedPair struct {
	cert     *tls.Certificate
	notAfter time.Time
}

var _ Source = (*FileSource)(nil)

// NewFileSource loads certFile and keyFile (PEM) and returns a source that
// serves them. It fails when the first load fails: a webhook started with a
// wrong path or a broken pair should say so at once (the pod restarts with
// back-off and the reason is in its log) rather than run unready. Call Start
// to follow later changes.
func NewFileSource(certFile, keyFile string, log *zap.Logger) (*FileSource, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("certs: both a certificate file and a key file are needed")
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &FileSource{
		certFile: certFile,
		keyFile:  keyFile,
		log:      log.With(zap.String("certFile", certFile), zap.String("keyFile", keyFile)),
		poll:     DefaultPollInterval,
		now:      time.Now,
	}
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate returns the pair being served.
func (s *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	p := s.cur.Load()
	if p == nil {
		return nil, errors.New("certs: no certificate loaded")
	}
	return p.cert, nil
}

// Ready fails when no pair is loaded or the one being served has expired
// (cert-manager stopped renewing it): the apiserver would refuse the
// handshake anyway, so the pod should leave the Service endpoints.
func (s *FileSource) Ready() error {
	p := s.cur.Load()
	if p == nil {
		return errors.New("no serving certificate loaded")
	}
	if now := s.now(); !now.Before(p.notAfter) {
		return fmt.Errorf("serving certificate expired at %s", p.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// NotAfter is the expiry of the certificate being served.
func (s *FileSource) NotAfter() time.Time {
	if p := s.cur.Load(); p != nil {
		return p.notAfter
	}
	return time.Time{}
}

// Start watches the files' directories and re-reads them every poll interval
// until ctx ends. A watcher that cannot be created is logged and the source
// falls back to polling alone: reload stays correct, only slower.
func (s *FileSource) Start(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch certificate files, polling only", zap.Duration("interval", s.poll), zap.Error(err))
	} else {
		defer func() { _ = w.Close() }()
		for _, dir := range uniqueDirs(s.certFile, s.keyFile) {
			if err := w.Add(dir); err != nil {
				s.log.Warn("cannot watch certificate directory, polling only", zap.String("dir", dir), zap.Error(err))
			}
		}
		events, errs = w.Events, w.Errors
	}

	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	// debounce is armed by events and fires one reload for the burst.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if s.relevant(ev.Name) {
				debounce.Reset(eventDebounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("certificate watch error, the periodic re-read still runs", zap.Error(err))
		case <-debounce.C:
			_, _ = s.reload()
		case <-tick.C:
			_, _ = s.reload()
		}
	}
}

// relevant tells whether an event in a watched directory may change what the
// files resolve to: the files themselves, or (mounted Secrets) the ..data
// symlink and the ..timestamped directories it points to.
func (s *FileSource) relevant(name string) bool {
	base := filepath.Base(name)
	if name == filepath.Clean(s.certFile) || name == filepath.Clean(s.keyFile) {
		return true
	}
	return len(base) >= 2 && base[:2] == ".."
}

// reload reads both files and, when they hold a new valid pair, makes it the
// one served. It reports whether the served pair changed. Failures leave the
// previous pair in place.
func (s *FileSource) reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return false, s.refuse(nil, nil, fmt.Errorf("reading certificate: %w", err))
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return false, s.refuse(certPEM, nil, fmt.Errorf("reading key: %w", err))
	}
	if s.cur.Load() != nil && bytes.Equal(certPEM, s.lastCert) && bytes.Equal(keyPEM, s.lastKey) {
		return false, nil
	}
	pair, err := parsePair(certPEM, keyPEM, s.now())
	if err != nil {
		return false, s.refuse(certPEM, keyPEM, err)
	}
	old := s.cur.Swap(pair)
	s.lastCert, s.lastKey, s.lastBad = certPEM, keyPEM, ""
	fields := []zap.Field{
		zap.Time("notAfter", pair.notAfter),
		zap.String("serial", pair.cert.Leaf.SerialNumber.String()),
		zap.Strings("dnsNames", pair.cert.Leaf.DNSNames),
	}
	if old == nil {
		s.log.Info("serving certificate loaded", fields...)
	} else {
		s.log.Info("serving certificate reloaded", append(fields, zap.Time("previousNotAfter", old.notAfter))...)
	}
	return true, nil
}

// refuse logs why a reload was refused, once per distinct (content, reason),
// and returns the error. A broken file found by every poll would otherwise
// log every ten seconds until fixed.
func (s *FileSource) refuse(certPEM, keyPEM []byte, err error) error {
	key := fmt.Sprintf("%x/%x/%s", hashOf(certPEM), hashOf(keyPEM), err)
	if key != s.lastBad {
		s.lastBad = key
		if s.cur.Load() != nil {
			s.log.Error("certificate reload refused, still serving the previous certificate",
				zap.Time("servingNotAfter", s.cur.Load().notAfter), zap.Error(err))
		} else {
			s.log.Error("no valid serving certificate", zap.Error(err))
		}
	}
	return err
}

// parsePair validates a PEM pair: both parse, the key matches the leaf, and
// the leaf has not expired. tls.X509KeyPair does the first two and fills
// Leaf (Go ≥ 1.23).
func parsePair(certPEM, keyPEM []byte, now time.Time) (*loadedPair, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// "tls: private key does not match public key" for a half-rotated
		// pair, "failed to find any PEM data" for a truncated file.
		return nil, fmt.Errorf("invalid key pair: %w", err)
	}
	if c.Leaf == nil {
		return nil, errors.New("invalid key pair: no leaf certificate")
	}
	if !now.Before(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired at %s", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &loadedPair{cert: &c, notAfter: c.Leaf.NotAfter}, nil
}

func uniqueDirs(paths ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		d := filepath.Dir(filepath.Clean(p))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// hashOf is a short fingerprint used only to recognise content already
// complained about.
func hashOf(b []byte) [8]byte {
	sum := sha256.Sum256(b)
	var out [8]byte
	copy(out[:], sum[:8])
	return out
}
