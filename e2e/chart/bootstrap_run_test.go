package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/certs"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestChartSelfBootstrapWithBinary starts two replicas of the real binary
// with the chart's selfBootstrap arguments, as the chart's ServiceAccount,
// against the chart's webhook configurations: both must converge on one CA
// in one Secret, write it into every caBundle, and serve a certificate that
// verifies against that bundle for the Service name the apiserver dials.
// (The apiserver itself cannot call them here: their certificates name the
// Service, not 127.0.0.1; e2e/certs covers the apiserver's side.)
func TestChartSelfBootstrapWithBinary(t *testing.T) {
	suite.Need(t)
	ctx := context.Background()
	bin, err := framework.BuildWebhook(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if help, _ := exec.Command(bin, "serve", "--help").CombinedOutput(); !strings.Contains(string(help), "--tls-bootstrap-secret") {
		t.Skip("serve does not implement --tls-bootstrap-* (certs.BootstrapFlags) yet")
	}
	const rel, ns = "boot", "dsw-boot"
	manifest, err := Template(ctx, rel, ns, "--set", "certs.mode=selfBootstrap")
	if err != nil {
		t.Fatal(err)
	}
	sa := chartIdentity(ctx, t, manifest, ns)
	// The chart's configurations, scoped to no namespace: only their
	// caBundle matters here, and nothing could answer their calls.
	m, v, err := URLWebhooks(manifest, "https://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	nowhere := &metav1.LabelSelector{MatchLabels: map[string]string{framework.ScopeLabel: "nowhere"}}
	for i := range m.Webhooks {
		m.Webhooks[i].NamespaceSelector = nowhere
	}
	for i := range v.Webhooks {
		v.Webhooks[i].NamespaceSelector = nowhere
	}
	ar := suite.CP.Client.AdmissionregistrationV1()
	if _, err := ar.MutatingWebhookConfigurations().Create(ctx, m, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ar.ValidatingWebhookConfigurations().Create(ctx, v, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ar.MutatingWebhookConfigurations().Delete(context.Background(), m.Name, metav1.DeleteOptions{})
		_ = ar.ValidatingWebhookConfigurations().Delete(context.Background(), v.Name, metav1.DeleteOptions{})
	})

	chartArgs, err := ServeArgs(manifest)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := impersonatingKubeconfig(t, sa)
	dir := t.TempDir()
	var urls []string
	for i := range 2 {
		url, stop := startBootstrapReplica(t, bin, dir, fmt.Sprint("replica-", i), kubeconfig, HostArgs(chartArgs))
		t.Cleanup(stop)
		urls = append(urls, url)
	}

	service := flagValue(chartArgs, "tls-bootstrap-service")
	serverName := service + "." + ns + ".svc"
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for _, url := range urls {
		for {
			last = readyAgainstBundle(ctx, url, m.Name, serverName)
			if last == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready with a certificate trusted by the caBundle after 60s: %v", url, last)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	sec, err := suite.CP.Client.CoreV1().Secrets(ns).Get(ctx, flagValue(chartArgs, "tls-bootstrap-secret"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(sec.Data[certs.SecretKeyBundle]), "BEGIN CERTIFICATE"); n != 1 {
		t.Errorf("two replicas left %d CAs in the Secret, want 1", n)
	}
	for _, w := range webhookBundles(t, m.Name) {
		if string(w) != string(sec.Data[certs.SecretKeyBundle]) {
			t.Error("a caBundle differs from the Secret's bundle")
		}
	}
}

// webhookBundles returns the caBundle of every webhook of the Mutating and
// Validating configurations called name.
func webhookBundles(t *testing.T, name string) [][]byte {
	t.Helper()
	ctx := context.Background()
	ar := suite.CP.Client.AdmissionregistrationV1()
	m, err := ar.MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ar.ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
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

// readyAgainstBundle GETs /readyz over TLS, trusting only the caBundle the
// MutatingWebhookConfiguration holds and checking the name the apiserver
// would dial.
func readyAgainstBundle(ctx context.Context, url, config, serverName string) error {
	m, err := suite.CP.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, config, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if len(m.Webhooks) == 0 || !pool.AppendCertsFromPEM(m.Webhooks[0].ClientConfig.CABundle) {
		return fmt.Errorf("no caBundle yet")
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}
	resp, err := c.Get(url + "/readyz")
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: HTTP %d", resp.StatusCode)
	}
	return nil
}

// startBootstrapReplica runs `serve` on loopback ports with args (the
// chart's, minus listeners) and returns its base URL and a stop function.
func startBootstrapReplica(t *testing.T, bin, dir, name, kubeconfig string, args []string) (string, func()) {
	t.Helper()
	port, mport := freeLoopbackPort(t), freeLoopbackPort(t)
	all := append([]string{"serve",
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		"--metrics-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(mport)),
		"--kubeconfig", kubeconfig,
	}, args...)
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, all...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (last 4 KiB):\n%s", name, b[max(0, len(b)-4096):])
			}
		}
	}
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
