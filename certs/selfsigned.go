package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// DevHosts are the names `serve --dev` serves: whatever a developer types
// into curl on the same machine, over IPv4 or IPv6.
var DevHosts = []string{"localhost", "127.0.0.1", "::1"}

// devValidity is long enough that a dev server left running over a weekend
// keeps working, short enough that a leaked dev CA is worthless soon. The CA
// is regenerated at every start anyway.
const devValidity = 30 * 24 * time.Hour

// SelfSigned is a Source for `serve --dev`: a throw-away CA, generated in
// memory at start, that signs one serving certificate for the given hosts.
// Nothing is ever reloaded; the CA certificate (never its key) can be
// written to a file so that curl can verify the server instead of being
// told --insecure.
type SelfSigned struct {
	ca       *keyPair
	serving  *tls.Certificate
	notAfter time.Time
}

var _ Source = (*SelfSigned)(nil)

// NewSelfSigned creates a CA and a serving certificate for hosts (DNS names
// or IP literals). ECDSA P-256 keeps generation in the low milliseconds, so
// --dev is ready well under a second.
func NewSelfSigned(hosts []string) (*SelfSigned, error) {
	if len(hosts) == 0 {
		return nil, errors.New("certs: self-signed certificate needs at least one host")
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			ips = append(ips, net.IP(a.AsSlice()))
			continue
		}
		if h == "" {
			return nil, errors.New("certs: empty host name")
		}
		dnsNames = append(dnsNames, h)
	}
	now := time.Now()
	ca, err := newCA("dualstack-webhook dev CA", devValidity, now)
	if err != nil {
		return nil, err
	}
	leaf, err := issueServing(ca, dnsNames, ips, devValidity, now)
	if err != nil {
		return nil, err
	}
	return &SelfSigned{ca: ca, serving: leaf.tlsCertificate(), notAfter: leaf.cert.NotAfter}, nil
}

// GetCertificate returns the serving certificate.
func (s *SelfSigned) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.serving, nil
}

// Start returns at once: a self-signed dev certificate never changes.
func (s *SelfSigned) Start(context.Context) error { return nil }

// Ready is nil until the certificate expires.
func (s *SelfSigned) Ready() error {
	if !time.Now().Before(s.notAfter) {
		return fmt.Errorf("self-signed certificate expired at %s", s.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// NotAfter is the serving certificate's expiry.
func (s *SelfSigned) NotAfter() time.Time { return s.notAfter }

// CAPEM is the PEM-encoded CA certificate that clients should trust.
func (s *SelfSigned) CAPEM() []byte { return s.ca.certPEM }

// WriteCA writes the CA certificate to path (creating its directory) through
// a temporary file and a rename, so a curl reading it concurrently never sees
// half a PEM block. Mode 0644: it is a public certificate, not a secret.
func (s *SelfSigned) WriteCA(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ca-*.pem")
	if err != nil {
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(s.ca.certPEM); err != nil {
		tmp.Close()
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("certs: writing CA: %w", err)
	}
	return nil
}
