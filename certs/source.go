// Package certs provides the serving certificate of the TLS listener: files
// written by cert-manager (hot reload), a self-signed pair for --dev, and a
// self-bootstrap mode for clusters without cert-manager.
package certs

import (
	"context"
	"crypto/tls"
	"time"
)

// Source hands the TLS listener its current certificate. Implementations
// must be safe for concurrent use: GetCertificate is called per handshake.
type Source interface {
	// GetCertificate is plugged into tls.Config.GetCertificate.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Start runs reloads/renewals until ctx ends. Sources that never change
	// return immediately.
	Start(ctx context.Context) error
	// Ready returns nil once a valid certificate is loaded; /readyz uses it.
	Ready() error
	// NotAfter is the expiry of the certificate being served (zero if none),
	// exported as a metric.
	NotAfter() time.Time
}
