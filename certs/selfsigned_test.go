package certs

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSelfSignedVerifiesForDevHosts(t *testing.T) {
	s, err := NewSelfSigned(DevHosts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "ca.pem")
	if err := s.WriteCA(path); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("written CA file holds no certificate")
	}
	leaf, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("certificate does not verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: pool}); err == nil {
		t.Error("certificate verifies for a host it was not issued for")
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready() = %v, want nil", err)
	}
	if d := time.Until(s.NotAfter()); d < 24*time.Hour {
		t.Errorf("NotAfter is only %s away", d)
	}
}

func TestSelfSignedServesTLSHandshake(t *testing.T) {
	s, err := NewSelfSigned(DevHosts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "ok")
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM())
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake with the dev CA failed: %v", err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if string(b) != "ok" {
		t.Errorf("read %q", b)
	}
}

func TestNewSelfSignedRejectsEmptyHosts(t *testing.T) {
	for name, hosts := range map[string][]string{"no hosts": nil, "an empty host": {"localhost", ""}} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewSelfSigned(hosts); err == nil {
				t.Error("want an error")
			}
		})
	}
}
