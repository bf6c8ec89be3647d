package certse2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/dualstack-webhook/dualstack-webhook/certs"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// allowServer is a loopback TLS admission server that allows everything and
// counts calls; its certificate comes from the Source under test, so every
// call the apiserver completes is a handshake that trusted our caBundle.
type allowServer struct {
	url   string
	calls atomic.Int64
	mu    sync.Mutex
	seen  map[string]bool // issuers of the certificates served
	src   certs.Source
	srv   *http.Server
}

func startAllowServer(t *testing.T, src certs.Source) *allowServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &allowServer{url: "https://" + ln.Addr().String(), seen: map[string]bool{}, src: src}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := src.GetCertificate(h)
			if err == nil {
				s.mu.Lock()
				s.seen[c.Leaf.Issuer.CommonName] = true
				s.mu.Unlock()
			}
			return c, err
		}},
	}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *allowServer) serve(w http.ResponseWriter, r *http.Request) {
	var rev admissionv1.AdmissionReview
	body, _ := io.ReadAll(io.LimitReader(r.Body, 7<<20))
	if err := json.Unmarshal(body, &rev); err != nil || rev.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	s.calls.Add(1)
	rev.Response = &admissionv1.AdmissionResponse{UID: rev.Request.UID, Allowed: true}
	rev.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&rev)
}

func (s *allowServer) issuers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// register creates fail-closed Mutating and Validating configurations named
// name, pointing at url, WITHOUT a caBundle (Bootstrap must add it), scoped to
// namespaces labelled ScopeLabel=name.
func register(t *testing.T, c kubernetes.Interface, name, url string) {
	t.Helper()
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{framework.ScopeLabel: name}}
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}},
	}}
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	mURL, vURL := url+"/mutate", url+"/validate"
	_, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "mutate." + name + ".e2e.dualstack-webhook.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &mURL},
			Rules: rules, NamespaceSelector: sel, SideEffects: &none, FailurePolicy: &fail,
			AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "validate." + name + ".e2e.dualstack-webhook.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &vURL},
			Rules: rules, NamespaceSelector: sel, SideEffects: &none, FailurePolicy: &fail,
			AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// caBundles returns the caBundle of every webhook of both configurations.
func caBundles(t *testing.T, c kubernetes.Interface, name string) [][]byte {
	t.Helper()
	ctx := context.Background()
	m, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{m.Webhooks[0].ClientConfig.CABundle, v.Webhooks[0].ClientConfig.CABundle}
}

func countCerts(b []byte) int { return strings.Count(string(b), "BEGIN CERTIFICATE") }

func dryRunService(ctx context.Context, c kubernetes.Interface, ns string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}
	_, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// TestBootstrapRotationWithRealAPIServer runs a Bootstrap source with CA and
// certificate lifetimes of seconds, so that the CA rotates about every 8 s,
// while Service creates go through fail-closed webhooks served with its
// certificate. Every create must succeed: the apiserver trusted each
// certificate at each moment, which is what keeping the old CA beside the
// new one in caBundle is for.
func TestBootstrapRotationWithRealAPIServer(t *testing.T) {
	suite.Need(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := "certs-rotation-" + rand.String(5)
	ns := namespace(t, "certs-webhook", nil)
	target := namespace(t, "certs-target", map[string]string{framework.ScopeLabel: name})

	boot, err := certs.NewBootstrap(certs.BootstrapConfig{
		Client:                          suite.CP.Client,
		Namespace:                       ns,
		SecretName:                      "dualstack-webhook-ca",
		DNSNames:                        certs.ServiceDNSNames("dualstack-webhook", ns),
		IPAddresses:                     []net.IP{net.ParseIP("127.0.0.1")},
		MutatingWebhookConfigurations:   []string{name},
		ValidatingWebhookConfigurations: []string{name},
		CADuration:                      24 * time.Second,
		CARenewBefore:                   16 * time.Second, // a new CA every ~8 s
		CAActivationDelay:               3 * time.Second,  // ≫ resync + apiserver informer lag here
		CertDuration:                    20 * time.Second,
		CertRenewBefore:                 10 * time.Second,
		Resync:                          250 * time.Millisecond,
		Log:                             zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := startAllowServer(t, boot)
	register(t, suite.CP.Client, name, srv.url)

	bootDone := make(chan error, 1)
	go func() { bootDone <- boot.Start(ctx) }()
	defer func() { cancel(); <-bootDone }()

	// Ready means: CA in the Secret, caBundle written, certificate issued.
	deadline := time.Now().Add(30 * time.Second)
	for boot.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", boot.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
	sec, err := suite.CP.Client.CoreV1().Secrets(ns).Get(ctx, "dualstack-webhook-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range caBundles(t, suite.CP.Client, name) {
		if string(b) != string(sec.Data[certs.SecretKeyBundle]) {
			t.Fatalf("webhook %d: caBundle is not the Secret's bundle", i)
		}
	}
	// The apiserver loads configurations asynchronously: wait until a call
	// really reaches us before counting failures.
	deadline = time.Now().Add(30 * time.Second)
	for srv.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the apiserver never called the webhook: %v", dryRunService(ctx, suite.CP.Client, target))
		}
		_ = dryRunService(ctx, suite.CP.Client, target)
		time.Sleep(100 * time.Millisecond)
	}

	// Load through ~3 CA rotations.
	var (
		creates, failures atomic.Int64
		firstErr          atomic.Value
		maxBundle         atomic.Int64
		wg                sync.WaitGroup
	)
	stop := make(chan struct{})
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, b := range caBundles(t, suite.CP.Client, name) {
				if n := int64(countCerts(b)); n > maxBundle.Load() {
					maxBundle.Store(n)
				}
			}
		}
	}()
	time.Sleep(26 * time.Second)
	close(stop)
	wg.Wait()

	t.Logf("%d Service creates through the webhooks, %d failed; %d CAs served; largest caBundle %d CAs",
		creates.Load(), failures.Load(), srv.issuers(), maxBundle.Load())
	if failures.Load() > 0 {
		t.Fatalf("%d of %d creates failed during CA rotation; first: %v", failures.Load(), creates.Load(), firstErr.Load())
	}
	if srv.issuers() < 3 {
		t.Fatalf("only %d CAs served: the rotation was not exercised", srv.issuers())
	}
	if maxBundle.Load() != 2 {
		t.Fatalf("largest caBundle held %d CAs, want 2 (new beside old during rotation)", maxBundle.Load())
	}
	if creates.Load() < 50 {
		t.Fatalf("only %d creates: not a load", creates.Load())
	}
}

// TestBootstrapReplicasConverge starts several Bootstrap sources at the same
// instant against a namespace without a CA: they must all adopt ONE CA (the
// apiserver's AlreadyExists decides the race) and each serving certificate
// must verify against the caBundle the apiserver holds.
func TestBootstrapReplicasConverge(t *testing.T) {
	suite.Need(t)
	ctx := context.Background()
	for round := range 5 {
		t.Run(fmt.Sprintf("round-%d", round), func(t *testing.T) {
			name := "certs-converge-" + rand.String(5)
			ns := namespace(t, "certs-converge", nil)
			register(t, suite.CP.Client, name, "https://127.0.0.1:1")

			const replicas = 3
			boots := make([]*certs.Bootstrap, replicas)
			for i := range boots {
				var err error
				boots[i], err = certs.NewBootstrap(certs.BootstrapConfig{
					Client:                          suite.CP.Client,
					Namespace:                       ns,
					SecretName:                      "ca",
					DNSNames:                        certs.ServiceDNSNames("dualstack-webhook", ns),
					MutatingWebhookConfigurations:   []string{name},
					ValidatingWebhookConfigurations: []string{name},
					Log:                             zaptest.NewLogger(t).Named(fmt.Sprint("replica-", i)),
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			start := make(chan struct{})
			errs := make([]error, replicas)
			var wg sync.WaitGroup
			for i, b := range boots {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = b.Sync(ctx)
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: %v", i, err)
				}
				if err := boots[i].Ready(); err != nil {
					t.Fatalf("replica %d not ready: %v", i, err)
				}
			}
			sec, err := suite.CP.Client.CoreV1().Secrets(ns).Get(ctx, "ca", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n := countCerts(sec.Data[certs.SecretKeyBundle]); n != 1 {
				t.Fatalf("Secret bundle holds %d CAs, want 1", n)
			}
			for w, bundle := range caBundles(t, suite.CP.Client, name) {
				if string(bundle) != string(sec.Data[certs.SecretKeyBundle]) {
					t.Fatalf("webhook %d caBundle differs from the Secret's", w)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(bundle)
				for i, b := range boots {
					c, err := b.GetCertificate(nil)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "dualstack-webhook." + ns + ".svc"}); err != nil {
						t.Fatalf("replica %d's certificate does not verify against the caBundle: %v", i, err)
					}
				}
			}
		})
	}
}
