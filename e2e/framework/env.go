package framework

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Env is what a suite runs against: a local control plane with webhook host
// processes it registered itself, or an existing cluster (kind) where the chart
// installed the webhook.
type Env struct {
	// Existing is true when running against KUBECONFIG's cluster.
	Existing bool
	Config   *rest.Config
	Client   kubernetes.Interface
	// Kubeconfig is a file usable by kubectl and the webhook.
	Kubeconfig string
	// ControlPlane is nil for an existing cluster.
	ControlPlane *ControlPlane
	// Artifacts is the folder of logs, kept on failure.
	Artifacts string
	// ServiceCIDRs are the cluster's ranges, primary first, read from the
	// ServiceCIDR "kubernetes" so suites adapt to any cluster shape.
	ServiceCIDRs []netip.Prefix

	webhooks []*Webhook
	regs     []Registration
}

// NewEnv returns an existing-cluster Env when E2E_USE_EXISTING_CLUSTER is set,
// else starts a local control plane with opts. name names the artifacts folder.
func NewEnv(ctx context.Context, name string, opts ControlPlaneOptions) (*Env, error) {
	if UseExistingCluster() {
		return NewExistingEnv(ctx)
	}
	return NewLocalEnv(ctx, name, opts)
}

// NewLocalEnv starts etcd + kube-apiserver with opts, logging under
// e2e/_artifacts/<name>-<time>/.
func NewLocalEnv(ctx context.Context, name string, opts ControlPlaneOptions) (*Env, error) {
	dir, err := ArtifactsDir(name)
	if err != nil {
		return nil, err
	}
	opts.LogDir = dir
	cp, err := StartControlPlane(ctx, opts)
	if err != nil {
		return nil, err
	}
	e := &Env{Config: cp.Config, Client: cp.Client, Kubeconfig: cp.KubeconfigPath, ControlPlane: cp, Artifacts: dir}
	if err := e.discover(ctx); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return e, nil
}

// NewExistingEnv connects to KUBECONFIG's cluster.
func NewExistingEnv(ctx context.Context) (*Env, error) {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		return nil, fmt.Errorf("%w: KUBECONFIG is empty", ErrPrereq)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", strings.Split(kc, string(os.PathListSeparator))[0])
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dir, err := ArtifactsDir("existing")
	if err != nil {
		return nil, err
	}
	e := &Env{Existing: true, Config: cfg, Client: c, Kubeconfig: kc, Artifacts: dir}
	if err := e.discover(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Env) discover(ctx context.Context) error {
	sc, err := e.Client.NetworkingV1().ServiceCIDRs().Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read ServiceCIDR kubernetes: %w", err)
	}
	e.ServiceCIDRs = nil
	for _, s := range sc.Spec.CIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("ServiceCIDR kubernetes: %w", err)
		}
		e.ServiceCIDRs = append(e.ServiceCIDRs, p)
	}
	return nil
}

// ArtifactsDir creates <repo>/e2e/_artifacts/<name>-<time>.
func ArtifactsDir(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "e2e", "_artifacts", fmt.Sprintf("%s-%s", name, time.Now().Format("20060102-150405.000")))
	return dir, os.MkdirAll(dir, 0o755)
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// WebhookBinary builds (once per test process) or locates the webhook binary.
func WebhookBinary() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dsw-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin, buildErr = BuildWebhook(dir)
	})
	return builtBin, buildErr
}

// StartWebhook runs one webhook instance against the local control plane
// (kubeconfig and artifacts folder filled in), registers it for namespaces
// labelled ScopeLabel=<instance>, and waits until the registration is
// effective in a fresh probe namespace.
func (e *Env) StartWebhook(ctx context.Context, instance string, opts WebhookOptions) (*Webhook, Registration, error) {
	if e.Existing {
		return nil, Registration{}, errors.New("StartWebhook needs a local control plane")
	}
	bin, err := WebhookBinary()
	if err != nil {
		return nil, Registration{}, err
	}
	opts.Binary, opts.Name, opts.Dir = bin, instance, e.Artifacts
	if opts.Kubeconfig == "" {
		opts.Kubeconfig = e.Kubeconfig
	}
	w, err := StartWebhook(ctx, opts)
	if err != nil {
		return nil, Registration{}, err
	}
	e.webhooks = append(e.webhooks, w)
	reg := Registration{Name: instance, URL: w.URL, CABundle: w.CABundle}
	if err := Register(ctx, e.Client, reg); err != nil {
		return w, reg, err
	}
	e.regs = append(e.regs, reg)
	ns, err := Namespace(ctx, e.Client, "probe-"+instance, map[string]string{ScopeLabel: instance}, nil)
	if err != nil {
		return w, reg, err
	}
	if err := WaitEffective(ctx, e.Client, ns, reg.MutatingName(), 30*time.Second); err != nil {
		return w, reg, fmt.Errorf("%w; webhook log %s:\n%s", err, w.LogPath, tail(w.LogPath, 30))
	}
	return w, reg, nil
}

// Close unregisters and stops the webhooks, stops the control plane, and
// removes the artifacts unless failed (or E2E_KEEP_ARTIFACTS) — then it says
// where they are.
func (e *Env) Close(failed bool) error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range e.regs {
		if err := Unregister(ctx, e.Client, r); err != nil {
			errs = append(errs, err)
		}
	}
	// In parallel: each one drains for its --shutdown-delay.
	stopErrs := make([]error, len(e.webhooks))
	var wg sync.WaitGroup
	for i, w := range e.webhooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopErrs[i] = w.Stop()
		}()
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	if e.ControlPlane != nil {
		if err := e.ControlPlane.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if failed || err != nil || truthy(os.Getenv(EnvKeepArtifacts)) {
		fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", e.Artifacts)
	} else {
		_ = os.RemoveAll(e.Artifacts)
	}
	return err
}

// Webhooks returns the started webhook processes.
func (e *Env) Webhooks() []*Webhook { return e.webhooks }
