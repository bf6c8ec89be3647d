package certs

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// noSecretsLogged fails if any entry, at any level, carries PEM or the
// bytes of a key or certificate: messages and every field rendered.
func noSecretsLogged(t *testing.T, logs *observer.ObservedLogs, secrets ...[]byte) {
	t.Helper()
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the check would pass vacuously")
	}
	for _, e := range logs.All() {
		text := e.Message + " " + fmt.Sprint(e.ContextMap())
		if strings.Contains(text, "-----BEGIN") || strings.Contains(text, "PRIVATE KEY") {
			t.Errorf("log entry %q carries PEM: %s", e.Message, text)
		}
		for _, s := range secrets {
			if len(s) > 0 && strings.Contains(text, strings.TrimSpace(string(s))) {
				t.Errorf("log entry %q carries secret bytes", e.Message)
			}
		}
	}
}

// TestNoCertificateOrKeyIsLogged: the self-bootstrap (a new CA, a CA Secret
// that does not parse, a serving certificate issued) and the file source
// (loads, refused reloads of garbage) log at debug level without any PEM,
// key or certificate bytes.
func TestNoCertificateOrKeyIsLogged(t *testing.T) {
	t.Run("bootstrap", func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		garbage := []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n")
		objs := append(webhookConfigs(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS},
			Data:       map[string][]byte{SecretKeyCACert: garbage, SecretKeyCAKey: garbage},
		})
		c := fake.NewClientset(objs...)
		clk := &clock{time.Now()}
		b, err := NewBootstrap(BootstrapConfig{
			Client: c, Namespace: testNS, SecretName: testSecret,
			DNSNames:                        ServiceDNSNames("dualstack-webhook", testNS),
			MutatingWebhookConfigurations:   []string{testConfig},
			ValidatingWebhookConfigurations: []string{testConfig},
			Now:                             clk.now,
			Log:                             zap.New(core),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		sec := caSecret(t, c)
		noSecretsLogged(t, logs, garbage, sec.Data[SecretKeyCACert], sec.Data[SecretKeyCAKey])
		if logs.FilterMessage("CA Secret is unreadable, replacing it with a new CA").Len() != 1 {
			t.Error("the unreadable CA Secret was not reported")
		}
	})
	t.Run("file source", func(t *testing.T) {
		p := newTestPKI(t)
		first, next := p.leaf(time.Hour), p.leaf(2*time.Hour)
		dir := t.TempDir()
		writeAtomic(t, dir, first.certPEM, first.keyPEM)
		core, logs := observer.New(zapcore.DebugLevel)
		s, err := NewFileSource(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		writeAtomic(t, dir, next.certPEM, first.keyPEM) // mismatched pair: refused
		if _, err := s.reload(); err == nil {
			t.Fatal("a mismatched pair was accepted")
		}
		writeAtomic(t, dir, next.certPEM, next.keyPEM)
		if changed, err := s.reload(); !changed || err != nil {
			t.Fatalf("reload() = %v, %v", changed, err)
		}
		noSecretsLogged(t, logs, first.certPEM, first.keyPEM, next.certPEM, next.keyPEM)
	})
}
