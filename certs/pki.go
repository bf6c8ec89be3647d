package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// backdate is subtracted from NotBefore so that a peer whose clock is a
// little behind ours still accepts a certificate issued a moment ago.
// cert-manager's issuers do not backdate; kubeadm's certs backdate by the
// validity's start being "now - skew"; five minutes covers NTP-less test VMs.
const backdate = 5 * time.Minute

// keyPair is a parsed certificate with its private key.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte

	tlsOnce sync.Once
	tlsCert *tls.Certificate
}

// newCA creates a self-signed CA valid for d from now. ECDSA P-256: small,
// fast to generate on a 2-core pod at start, accepted by every apiserver.
func newCA(commonName string, d time.Duration, now time.Time) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(d),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return sign(tmpl, tmpl, key, key)
}

// issueServing signs a server certificate for dnsNames/ips with ca, valid
// for d from now but never past the CA's own expiry (a leaf outliving its
// issuer would fail verification before its renewal time).
func issueServing(ca *keyPair, dnsNames []string, ips []net.IP, d time.Duration, now time.Time) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating serving key: %w", err)
	}
	notAfter := now.Add(d)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return sign(tmpl, ca.cert, key, ca.key)
}

// sign creates the certificate tmpl for key, signed by issuerKey, and returns
// it with its PEM encodings.
//
// cert-manager's pkg/util/pki has helpers for these few stdlib calls, but
// importing it pulls go-ldap, gateway-api, component-base/logs, cobra and
// OpenTelemetry into the webhook binary (measured: +40 go.sum lines) to save
// about forty lines, so the stdlib is used directly.
func sign(tmpl, issuer *x509.Certificate, key *ecdsa.PrivateKey, issuerKey crypto.Signer) (*keyPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// parseKeyPair decodes a PEM certificate (the first one, if several) and its
// key and checks that they belong together.
func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	// tls.X509KeyPair decodes PKCS#1, PKCS#8 and SEC1 keys and checks that
	// the key matches the first certificate.
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok || c.Leaf == nil {
		return nil, errors.New("unsupported key type")
	}
	return &keyPair{cert: c.Leaf, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// tlsCertificate turns a leaf pair into what crypto/tls serves, built once:
// it is called on every handshake.
func (p *keyPair) tlsCertificate() *tls.Certificate {
	p.tlsOnce.Do(func() {
		p.tlsCert = &tls.Certificate{
			Certificate: [][]byte{p.cert.Raw},
			PrivateKey:  p.key,
			Leaf:        p.cert,
		}
	})
	return p.tlsCert
}

// randomSerial returns a 128-bit positive serial, as RFC 5280 §4.1.2.2 and
// the CA/B baseline requirements (≥ 64 bits of entropy) ask.
func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		// crypto/rand never fails on supported platforms (Go ≥ 1.24 it
		// crashes the program instead), so this is unreachable.
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}
