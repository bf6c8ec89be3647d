package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	testNS     = "dualstack-webhook"
	testSecret = "dualstack-webhook-ca"
	testConfig = "dualstack-webhook"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func webhookConfigs() []runtime.Object {
	return []runtime.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: testConfig},
			Webhooks: []admissionregistrationv1.MutatingWebhook{
				{Name: "defaulting.dualstack-webhook.io"},
				{Name: "pinning.dualstack-webhook.io"},
			},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: testConfig},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "validate.dualstack-webhook.io"}},
		},
	}
}

func newTestBootstrap(t *testing.T, c *fake.Clientset, clk *clock) *Bootstrap {
	t.Helper()
	b, err := NewBootstrap(BootstrapConfig{
		Client:                          c,
		Namespace:                       testNS,
		SecretName:                      testSecret,
		DNSNames:                        ServiceDNSNames("dualstack-webhook", testNS),
		MutatingWebhookConfigurations:   []string{testConfig},
		ValidatingWebhookConfigurations: []string{testConfig},
		Now:                             clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bundles returns the caBundle of every webhook of the test configurations.
func bundles(t *testing.T, c *fake.Clientset) [][]byte {
	t.Helper()
	ctx := context.Background()
	m, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range m.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	for _, w := range v.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// verifyServing checks the served certificate against every caBundle the
// apiserver would use, at the test clock's time.
func verifyServing(t *testing.T, c *fake.Clientset, b *Bootstrap, at time.Time) *x509.Certificate {
	t.Helper()
	tc, err := b.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, bundle := range bundles(t, c) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(bundle) {
			t.Fatalf("webhook %d: caBundle holds no certificate", i)
		}
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{
			DNSName: "dualstack-webhook." + testNS + ".svc", Roots: pool, CurrentTime: at,
		}); err != nil {
			t.Fatalf("webhook %d: serving certificate does not verify against caBundle: %v", i, err)
		}
	}
	return tc.Leaf
}

func caSecret(t *testing.T, c *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := c.CoreV1().Secrets(testNS).Get(context.Background(), testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func countCerts(t *testing.T, pemBytes []byte) int {
	t.Helper()
	return strings.Count(string(pemBytes), "BEGIN CERTIFICATE")
}

func TestBootstrapFirstSync(t *testing.T) {
	c := fake.NewClientset(webhookConfigs()...)
	clk := &clock{time.Now()}
	b := newTestBootstrap(t, c, clk)
	if b.Ready() == nil {
		t.Fatal("ready before the first sync")
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("Ready() = %v", err)
	}
	leaf := verifyServing(t, c, b, clk.t)
	// x509 times have second precision.
	if got, want := leaf.NotAfter.Sub(clk.t), DefaultCertDuration; got > want || got < want-time.Second {
		t.Errorf("serving validity %v, want %v", got, want)
	}
	if !b.NotAfter().Equal(leaf.NotAfter) {
		t.Errorf("NotAfter() = %v, want %v", b.NotAfter(), leaf.NotAfter)
	}
	sec := caSecret(t, c)
	if n := countCerts(t, sec.Data[SecretKeyBundle]); n != 1 {
		t.Errorf("bundle has %d certificates, want 1", n)
	}
	if sec.Labels[ManagedByLabel] == "" {
		t.Error("CA Secret not labelled")
	}

	// A second sync with nothing due writes nothing.
	c.ClearActions()
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("idle sync did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

// TestBootstrapRenewsServingCertificate: nothing changes before the renewal
// time; after it, a new certificate from the same CA, with the same names.
func TestBootstrapRenewsServingCertificate(t *testing.T) {
	c := fake.NewClientset(webhookConfigs()...)
	start := time.Now()
	clk := &clock{start}
	b := newTestBootstrap(t, c, clk)
	ctx := context.Background()
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := b.GetCertificate(nil)
	tests := []struct {
		name    string
		at      time.Time
		renewed bool
	}{
		{"an hour before the renewal time: kept", start.Add(DefaultCertDuration - DefaultCertRenewBefore - time.Hour), false},
		{"a minute after the renewal time: renewed", start.Add(DefaultCertDuration - DefaultCertRenewBefore + time.Minute), true},
	}
	for _, tc := range tests {
		clk.t = tc.at
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got, _ := b.GetCertificate(nil)
		if renewed := got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0; renewed != tc.renewed {
			t.Errorf("%s: renewed = %v", tc.name, renewed)
		}
		if got.Leaf.Issuer.String() != first.Leaf.Issuer.String() || !slices.Equal(got.Leaf.DNSNames, first.Leaf.DNSNames) {
			t.Errorf("%s: issuer or names changed: %s %v", tc.name, got.Leaf.Issuer, got.Leaf.DNSNames)
		}
		verifyServing(t, c, b, tc.at)
	}
	if !b.NotAfter().After(first.Leaf.NotAfter) {
		t.Errorf("NotAfter() = %v did not move past the first certificate's %v", b.NotAfter(), first.Leaf.NotAfter)
	}
}

func TestBootstrapNotReadyWithoutWebhookConfigurations(t *testing.T) {
	c := fake.NewClientset() // configurations not installed (yet)
	b := newTestBootstrap(t, c, &clock{time.Now()})
	if err := b.Sync(context.Background()); err == nil {
		t.Fatal("sync succeeded without the webhook configurations")
	}
	err := b.Ready()
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Ready() = %v, want the NotFound reason", err)
	}
}

// TestBootstrapCARotation walks the clock through a CA's life and checks the
// apiserver could verify the served certificate at every step.
func TestBootstrapCARotation(t *testing.T) {
	c := fake.NewClientset(webhookConfigs()...)
	start := time.Now()
	clk := &clock{start}
	b := newTestBootstrap(t, c, clk)
	ctx := context.Background()
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	oldCA := caSecret(t, c).Data[SecretKeyCACert]

	steps := []struct {
		name          string
		at            time.Time
		wantBundle    int
		wantNewIssuer bool
	}{
		{"renewal due: new CA added beside the old one, old still issuing", start.Add(DefaultCADuration - DefaultCARenewBefore + time.Second), 2, false},
		{"within the activation delay: still the old issuer", start.Add(DefaultCADuration - DefaultCARenewBefore + DefaultCAActivationDelay/2), 2, false},
		{"after the activation delay: new issuer, both CAs trusted", start.Add(DefaultCADuration - DefaultCARenewBefore + 2*DefaultCAActivationDelay), 2, true},
		{"old CA expired: dropped from the bundle", start.Add(DefaultCADuration + time.Hour), 1, true},
	}
	for _, st := range steps {
		clk.t = st.at
		if err := b.Sync(ctx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		sec := caSecret(t, c)
		if n := countCerts(t, sec.Data[SecretKeyBundle]); n != st.wantBundle {
			t.Errorf("%s: Secret bundle has %d CAs, want %d", st.name, n, st.wantBundle)
		}
		for i, bnd := range bundles(t, c) {
			if n := countCerts(t, bnd); n != st.wantBundle {
				t.Errorf("%s: webhook %d caBundle has %d CAs, want %d", st.name, i, n, st.wantBundle)
			}
		}
		leaf := verifyServing(t, c, b, st.at)
		signedByOld := leaf.Issuer.CommonName == mustCert(t, oldCA).Subject.CommonName
		if signedByOld == st.wantNewIssuer {
			t.Errorf("%s: serving certificate issued by %q, want new issuer %v", st.name, leaf.Issuer.CommonName, st.wantNewIssuer)
		}
		if err := b.Ready(); err != nil {
			t.Errorf("%s: Ready() = %v", st.name, err)
		}
	}
}

func mustCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestBootstrapAdoptsTheWinnersCA: when another replica creates the Secret
// between our Get and Create, we adopt its CA instead of failing or
// overwriting it.
func TestBootstrapAdoptsTheWinnersCA(t *testing.T) {
	clk := &clock{time.Now()}
	ctx := context.Background()
	// The winner runs against its own fake cluster; its Secret is what the
	// loser's cluster holds by the time the loser's Create arrives.
	// (A fake clientset cannot be called from inside its own reactor.)
	wc := fake.NewClientset(webhookConfigs()...)
	winner := newTestBootstrap(t, wc, clk)
	if err := winner.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	won := caSecret(t, wc)

	c := fake.NewClientset(webhookConfigs()...)
	loser := newTestBootstrap(t, c, clk)
	raced := false
	c.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		if err := c.Tracker().Add(won.DeepCopy()); err != nil {
			t.Errorf("planting the winner's Secret: %v", err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, testSecret)
	})
	if err := loser.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !raced {
		t.Fatal("the race was not exercised")
	}
	if got := caSecret(t, c).Data[SecretKeyCACert]; string(got) != string(won.Data[SecretKeyCACert]) {
		t.Fatal("the loser replaced the winner's CA")
	}
	wl, _ := winner.GetCertificate(nil)
	ll, _ := loser.GetCertificate(nil)
	if wl.Leaf.Issuer.String() != ll.Leaf.Issuer.String() {
		t.Fatalf("replicas use different CAs: %s vs %s", wl.Leaf.Issuer, ll.Leaf.Issuer)
	}
	verifyServing(t, c, loser, clk.t)
}

// TestBootstrapRotationConflict: two replicas both find the CA due; the one
// whose Update conflicts re-reads and adopts the other's new CA rather than
// rotating a second time (which would drop the first new CA from trust).
func TestBootstrapRotationConflict(t *testing.T) {
	c := fake.NewClientset(webhookConfigs()...)
	start := time.Now()
	clk := &clock{start}
	b := newTestBootstrap(t, c, clk)
	ctx := context.Background()
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	clk.t = start.Add(DefaultCADuration - DefaultCARenewBefore + time.Hour)

	// The rival's rotation: a new CA with ours as previous.
	before := caSecret(t, c)
	st, err := parseState(before, clk.t)
	if err != nil {
		t.Fatal(err)
	}
	rival, err := b.newState(st.current, clk.t)
	if err != nil {
		t.Fatal(err)
	}
	rivalSecret := b.secretFor(before, rival)

	conflicted := false
	c.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		gvr := corev1.SchemeGroupVersion.WithResource("secrets")
		if err := c.Tracker().Update(gvr, rivalSecret, testNS); err != nil {
			t.Errorf("planting the rival rotation: %v", err)
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, nil)
	})
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !conflicted {
		t.Fatal("the conflict was not exercised")
	}
	sec := caSecret(t, c)
	if string(sec.Data[SecretKeyCACert]) != string(rival.current.certPEM) {
		t.Fatal("rotated a second time instead of adopting the rival's new CA")
	}
	if n := countCerts(t, sec.Data[SecretKeyBundle]); n != 2 {
		t.Fatalf("bundle has %d CAs after a contested rotation, want 2 (new + old)", n)
	}
	for i, bnd := range bundles(t, c) {
		if string(bnd) != string(sec.Data[SecretKeyBundle]) {
			t.Errorf("webhook %d caBundle differs from the Secret's", i)
		}
	}
	verifyServing(t, c, b, clk.t)
}

func TestBootstrapReplacesUnreadableCA(t *testing.T) {
	objs := append(webhookConfigs(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS},
		Data:       map[string][]byte{SecretKeyCACert: []byte("garbage"), SecretKeyCAKey: []byte("garbage")},
	})
	c := fake.NewClientset(objs...)
	clk := &clock{time.Now()}
	b := newTestBootstrap(t, c, clk)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	verifyServing(t, c, b, clk.t)
}

func TestNewBootstrapValidates(t *testing.T) {
	c := fake.NewClientset()
	tests := map[string]BootstrapConfig{
		"no client":            {Namespace: "a", SecretName: "b", DNSNames: []string{"x"}},
		"no namespace":         {Client: c, SecretName: "b", DNSNames: []string{"x"}},
		"no secret":            {Client: c, Namespace: "a", DNSNames: []string{"x"}},
		"no names":             {Client: c, Namespace: "a", SecretName: "b"},
		"renew after duration": {Client: c, Namespace: "a", SecretName: "b", DNSNames: []string{"x"}, CertDuration: time.Hour, CertRenewBefore: 2 * time.Hour},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewBootstrap(cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}
