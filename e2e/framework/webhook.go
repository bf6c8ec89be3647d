package framework

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BuildWebhook returns the dualstack-webhook binary to run: $E2E_WEBHOOK_BIN
// when set (make builds it once), else `go build` of the repository into
// outDir. Building is what users do, so the suite tests the real artefact.
func BuildWebhook(outDir string) (string, error) {
	if p := os.Getenv(EnvWebhookBin); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvWebhookBin, p, err)
		}
		return abs, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(outDir, "dualstack-webhook")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build dualstack-webhook: %v\n%s", err, stderr.String())
	}
	return out, nil
}

// WebhookOptions configures one `dualstack-webhook serve` host process.
type WebhookOptions struct {
	// Binary is the dualstack-webhook executable (see BuildWebhook).
	Binary string
	// Name labels the log file and the working folder (e.g. "default").
	Name string
	// Dir receives the serving certificate and <Name>.log.
	Dir string
	// Kubeconfig is passed as --kubeconfig.
	Kubeconfig string
	// ServiceCIDRs is passed as --service-cidrs when not empty.
	ServiceCIDRs string
	// Namespace is passed as --namespace (where the state ConfigMaps live).
	Namespace string
	// DefaultIPFamilyPolicy is passed as --default-ip-family-policy when set.
	DefaultIPFamilyPolicy string
	// ExtraArgs are appended after the flags above.
	ExtraArgs []string
	// Env is added to the process's environment (e.g. POD_NAME, which
	// names the replica in the reconciler Lease).
	Env []string
	// ReadyTimeout bounds the wait for /readyz (default 60s).
	ReadyTimeout time.Duration
}

// Webhook is a running dualstack-webhook process.
type Webhook struct {
	// URL is https://127.0.0.1:<port>; the registrations add /mutate and /validate.
	URL string
	// MetricsURL is http://127.0.0.1:<port>.
	MetricsURL string
	// CABundle is the PEM CA that signed the serving certificate.
	CABundle []byte
	// LogPath holds the process's stdout and stderr.
	LogPath string
	// Args are the command line it was started with (for reports).
	Args []string

	cmd    *exec.Cmd
	done   chan struct{}
	client *http.Client
	log    *os.File

	mu      sync.Mutex
	exitErr error
}

// StartWebhook mints a serving certificate for 127.0.0.1, starts the binary on
// two free loopback ports and waits until GET /readyz answers 200 over TLS
// verified against that certificate's CA.
func StartWebhook(ctx context.Context, opts WebhookOptions) (*Webhook, error) {
	if opts.Name == "" {
		opts.Name = "webhook"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	certDir := filepath.Join(opts.Dir, opts.Name+"-certs")
	sc, err := NewServingCert(certDir, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sc.CAPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}

	// Free ports are picked by binding :0 and releasing; another process can
	// grab one in between, so a start whose process dies early is retried.
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		w, err := startOnce(ctx, opts, sc, client, attempt)
		if err == nil {
			return w, nil
		}
		lastErr = err
		if !errors.Is(err, errExitedEarly) {
			break
		}
	}
	return nil, lastErr
}

var errExitedEarly = errors.New("webhook process exited before it was ready")

func startOnce(ctx context.Context, opts WebhookOptions, sc *ServingCert, client *http.Client, attempt int) (*Webhook, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve",
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		"--metrics-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(mport)),
		"--tls-cert-file", sc.CertFile,
		"--tls-key-file", sc.KeyFile,
	}
	if opts.ServiceCIDRs != "" {
		args = append(args, "--service-cidrs", opts.ServiceCIDRs)
	}
	if opts.Kubeconfig != "" {
		args = append(args, "--kubeconfig", opts.Kubeconfig)
	}
	if opts.Namespace != "" {
		args = append(args, "--namespace", opts.Namespace)
	}
	if opts.DefaultIPFamilyPolicy != "" {
		args = append(args, "--default-ip-family-policy", opts.DefaultIPFamilyPolicy)
	}
	args = append(args, opts.ExtraArgs...)

	logPath := filepath.Join(opts.Dir, opts.Name+".log")
	if attempt > 1 {
		logPath = filepath.Join(opts.Dir, fmt.Sprintf("%s.attempt%d.log", opts.Name, attempt))
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "# %s %s\n", opts.Binary, strings.Join(args, " "))
	cmd := exec.Command(opts.Binary, args...)
	if len(opts.Env) > 0 {
		cmd.Env = append(os.Environ(), opts.Env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", opts.Binary, err)
	}
	w := &Webhook{
		URL:        "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		MetricsURL: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(mport)),
		CABundle:   sc.CAPEM,
		LogPath:    logPath,
		Args:       append([]string{opts.Binary}, args...),
		cmd:        cmd,
		done:       make(chan struct{}),
		client:     client,
		log:        logFile,
	}
	go func() {
		err := cmd.Wait()
		w.mu.Lock()
		w.exitErr = err
		w.mu.Unlock()
		close(w.done)
	}()

	deadline := time.Now().Add(opts.ReadyTimeout)
	var last string
	for {
		select {
		case <-w.done:
			_ = logFile.Close()
			return nil, fmt.Errorf("%w (%v); log %s:\n%s", errExitedEarly, w.exitError(), logPath, tail(logPath, 40))
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		code, body, err := w.Get("/readyz")
		if err == nil && code == http.StatusOK {
			return w, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d %s", code, strings.TrimSpace(string(body)))
		}
		if time.Now().After(deadline) {
			_ = w.Stop()
			return nil, fmt.Errorf("webhook %s not ready after %s (last: %s); log %s:\n%s",
				w.URL, opts.ReadyTimeout, last, logPath, tail(logPath, 40))
		}
	}
}

func (w *Webhook) exitError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exitErr
}

// Get fetches a path on the TLS listener (verified with the test CA).
func (w *Webhook) Get(path string) (int, []byte, error) {
	return w.do(http.MethodGet, w.URL+path, "", nil)
}

// Post posts body to a path on the TLS listener.
func (w *Webhook) Post(path, contentType string, body []byte) (int, []byte, error) {
	return w.do(http.MethodPost, w.URL+path, contentType, body)
}

// Metrics fetches /metrics from the metrics listener.
func (w *Webhook) Metrics() (int, []byte, error) {
	return w.do(http.MethodGet, w.MetricsURL+"/metrics", "", nil)
}

func (w *Webhook) do(method, url, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

// PID is the process id of the webhook.
func (w *Webhook) PID() int { return w.cmd.Process.Pid }

// RSS is the resident set size of the process in bytes (VmRSS in
// /proc/<pid>/status: what the kernel charges to it, heap or not).
func (w *Webhook) RSS() (int64, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(w.PID()), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("pid %d: unexpected VmRSS line %q", w.PID(), line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS (process gone?)", w.PID())
}

// Metric scrapes /metrics and returns the sum of the samples of the metric
// name whose labels include every one of labels (none: all its samples);
// found is false when there is no such sample.
func (w *Webhook) Metric(name string, labels map[string]string) (value float64, found bool, err error) {
	code, body, err := w.Metrics()
	if err != nil {
		return 0, false, err
	}
	if code != http.StatusOK {
		return 0, false, fmt.Errorf("%s/metrics: HTTP %d", w.MetricsURL, code)
	}
	value, found = MetricSum(body, name, labels)
	return value, found, nil
}

// MetricSum reads the Prometheus text format: the sum of the samples of
// name (exactly: no _bucket/_sum suffix matching) whose labels include
// every one of labels.
func MetricSum(body []byte, name string, labels map[string]string) (sum float64, found bool) {
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		got := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			for _, kv := range strings.Split(rest[1:end], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					got[k] = strings.Trim(v, `"`)
				}
			}
			rest = rest[end+1:]
		}
		if !strings.HasPrefix(rest, " ") {
			continue // another metric whose name starts with name
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		f := strings.Fields(rest)
		if !match || len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// Running reports whether the process is still alive.
func (w *Webhook) Running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// Terminate sends SIGTERM and returns at once: the process begins its
// graceful shutdown (--shutdown-delay) while the caller keeps working. Stop
// still waits for it.
func (w *Webhook) Terminate() error {
	if w == nil || w.cmd == nil || w.cmd.Process == nil {
		return errors.New("webhook not started")
	}
	return w.cmd.Process.Signal(syscall.SIGTERM)
}

// Stop sends SIGTERM (graceful shutdown is part of what users get), waits up
// to 15s, then kills. It returns the exit error unless the process ended from
// our own signal.
func (w *Webhook) Stop() error {
	if w == nil || w.cmd == nil || w.cmd.Process == nil {
		return nil
	}
	if w.Running() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(15 * time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
			_ = w.log.Close()
			return fmt.Errorf("webhook %s did not stop within 15s of SIGTERM; killed", w.URL)
		}
	}
	_ = w.log.Close()
	var ee *exec.ExitError
	if err := w.exitError(); err != nil && !(errors.As(err, &ee) && !ee.Exited()) {
		return fmt.Errorf("webhook %s exited: %w", w.URL, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
