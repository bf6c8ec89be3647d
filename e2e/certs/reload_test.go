package certse2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// testCA signs serving leaves for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) leaf(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "dualstack-webhook e2e rotated"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestBinaryReloadsRotatedFiles runs the real dualstack-webhook binary
// (--tls-cert-file/--tls-key-file, i.e. certs.FileSource) behind fail-closed
// registrations and rewrites its certificate files 40 times while the
// apiserver sends it Service creates: half of the rotations the naive way
// (cert then key, in place: truncated and mismatched files for a moment),
// half by rename. The registration trusts both the harness CA and ours, so a
// request can only fail if the binary served a broken pair or restarted.
func TestBinaryReloadsRotatedFiles(t *testing.T) {
	suite.Need(t)
	ctx := context.Background()
	bin, err := framework.BuildWebhook(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stateNS := namespace(t, "certs-reload-state", nil)
	dir := t.TempDir()
	w, err := framework.StartWebhook(ctx, framework.WebhookOptions{
		Binary: bin, Name: "reload", Dir: dir, Kubeconfig: suite.CP.KubeconfigPath,
		ServiceCIDRs: framework.DualStackCIDRs, Namespace: stateNS,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(w.LogPath); err == nil {
				t.Logf("webhook log (last 4 KiB):\n%s", b[max(0, len(b)-4096):])
			}
		}
		_ = w.Stop()
	})
	certDir := filepath.Join(dir, "reload-certs") // framework.StartWebhook's layout
	ca := newTestCA(t, "rotation CA")

	name := "reload-" + utilrand.String(5)
	reg := framework.Registration{Name: name, URL: w.URL, CABundle: append(append([]byte{}, w.CABundle...), ca.pem...)}
	if err := framework.Register(ctx, suite.CP.Client, reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = framework.Unregister(context.Background(), suite.CP.Client, reg) })
	target := namespace(t, "certs-reload", map[string]string{framework.ScopeLabel: name})
	if err := framework.WaitEffective(ctx, suite.CP.Client, target, reg.MutatingName(), 30*time.Second); err != nil {
		t.Fatal(err)
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(reg.CABundle)
	var (
		creates, failures atomic.Int64
		firstErr          atomic.Value
		seenMu            sync.Mutex
		seen              = map[string]bool{}
		wg                sync.WaitGroup
		stop              = make(chan struct{})
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				creates.Add(1)
				if err := dryRunService(ctx, suite.CP.Client, target); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	// A prober dials fresh connections (the apiserver keeps its own alive)
	// to see which certificate is being served.
	wg.Add(1)
	go func() {
		defer wg.Done()
		addr := strings.TrimPrefix(w.URL, "https://")
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, "probe: "+err.Error())
				continue
			}
			s := c.ConnectionState().PeerCertificates[0].SerialNumber.String()
			_ = c.Close()
			seenMu.Lock()
			seen[s] = true
			seenMu.Unlock()
		}
	}()

	certFile, keyFile := filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")
	for i := range 40 {
		time.Sleep(300 * time.Millisecond)
		c, k := ca.leaf(t, int64(1000+i))
		if i%2 == 0 {
			if err := os.WriteFile(certFile, c, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, k, 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		for dst, b := range map[string][]byte{certFile: c, keyFile: k} {
			tmp := dst + ".tmp"
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("%d Service creates through the binary while its files were rotated 40 times: %d failed; %d distinct certificates observed",
		creates.Load(), failures.Load(), len(seen))
	if failures.Load() > 0 {
		t.Fatalf("%d failures during rotation; first: %v", failures.Load(), firstErr.Load())
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct certificates observed: the binary did not follow the rotation", len(seen))
	}
	if !w.Running() {
		t.Fatal("the webhook process exited")
	}
}
