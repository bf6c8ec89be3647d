package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Cluster shapes used across the suites (upstream TestCreateInitIPFields uses
// the 10.0.0.0/16 and 2000::/108 ones).
const (
	DualStackCIDRs = "10.96.0.0/16,fd00:10:96::/108" // this project's default shape
	V4CIDRs        = "10.0.0.0/16"
	V6CIDRs        = "2000::/108"
	V4V6CIDRs      = "10.0.0.0/16,2000::/108"
	V6V4CIDRs      = "2000::/108,10.0.0.0/16"
)

// ControlPlaneOptions shapes a local control plane.
type ControlPlaneOptions struct {
	// ServiceCIDRs is --service-cluster-ip-range (comma list, primary first);
	// empty means DualStackCIDRs.
	ServiceCIDRs string
	// ControllerManager also starts kube-controller-manager with the namespace,
	// garbage-collector and service-cidr controllers (namespace deletion,
	// ServiceCIDR deletion and Ready status need them).
	ControllerManager bool
	// LogDir receives etcd.log, kube-apiserver.log, kube-controller-manager.log
	// and the kubeconfig; empty means a temporary folder removed on Stop.
	LogDir string
	// APIServerArgs are extra/overriding kube-apiserver flags (without "--").
	APIServerArgs map[string]string
}

// ControlPlane is a running etcd + kube-apiserver (+ kube-controller-manager).
type ControlPlane struct {
	Config         *rest.Config
	Client         kubernetes.Interface
	KubeconfigPath string
	ServiceCIDRs   string
	Dir            string

	env     *envtest.Environment
	kcm     *exec.Cmd
	kcmDone chan struct{}
	logs    []io.Closer
	tempDir bool
	// restarted are the components Restart started again.
	restarted map[string]*restarted
	// Forced lists the graceful stops of Restart that had to be ended by
	// SIGKILL, for the caller's report.
	Forced []string
}

var quietOnce sync.Once

// StartControlPlane starts etcd and kube-apiserver on loopback and waits until
// Services can be created (the default ServiceCIDR exists and is Ready).
func StartControlPlane(ctx context.Context, opts ControlPlaneOptions) (_ *ControlPlane, err error) {
	// envtest logs through controller-runtime's global logger, which otherwise
	// prints a "log.SetLogger was never called" stack trace after 30s.
	quietOnce.Do(func() { logf.SetLogger(logr.Discard()) })

	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{ServiceCIDRs: opts.ServiceCIDRs, Dir: opts.LogDir}
	if cp.ServiceCIDRs == "" {
		cp.ServiceCIDRs = DualStackCIDRs
	}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "dsw-cp-"); err != nil {
			return nil, err
		}
		cp.tempDir = true
	} else if err := os.MkdirAll(cp.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()

	etcdLog, err := cp.logFile("etcd.log")
	if err != nil {
		return nil, err
	}
	apiLog, err := cp.logFile("kube-apiserver.log")
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 60 * time.Second, // 2 busy cores can be slow
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
	api := env.ControlPlane.GetAPIServer()
	api.Out, api.Err = apiLog, apiLog
	args := api.Configure()
	args.Set("service-cluster-ip-range", cp.ServiceCIDRs)
	// The endpoint reconciler refuses a loopback advertise address.
	args.Set("endpoint-reconciler-type", "none")
	args.Set("advertise-address", "127.0.0.1")
	for k, v := range opts.APIServerArgs {
		args.Set(k, v)
	}
	cp.env = env
	if cp.Config, err = env.Start(); err != nil {
		return nil, fmt.Errorf("start control plane (logs in %s): %w", cp.Dir, err)
	}
	cp.Config.QPS, cp.Config.Burst = 200, 400 // the suites are bursty; stay off client-side throttling
	if cp.Client, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return nil, err
	}
	cp.KubeconfigPath = filepath.Join(cp.Dir, "kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(); err != nil {
			return nil, err
		}
	}
	if err := waitServiceCIDRReady(ctx, cp.Client); err != nil {
		return nil, fmt.Errorf("default ServiceCIDR (logs in %s): %w", cp.Dir, err)
	}
	return cp, nil
}

func (cp *ControlPlane) logFile(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(cp.Dir, name))
	if err != nil {
		return nil, err
	}
	cp.logs = append(cp.logs, f)
	return f, nil
}

func (cp *ControlPlane) startControllerManager() error {
	bin, err := Binary("kube-controller-manager")
	if err != nil {
		return err
	}
	logFile, err := cp.logFile("kube-controller-manager.log")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin,
		"--kubeconfig", cp.KubeconfigPath,
		"--leader-elect=false",
		"--controllers", "namespace-controller,garbage-collector-controller,service-cidr-controller",
		"--secure-port=0", // no serving: nothing scrapes it, and it would need authn delegation
		"--service-cluster-ip-range", cp.ServiceCIDRs,
		"--v=2",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a crashed test binary
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	cp.kcm = cmd
	cp.kcmDone = make(chan struct{})
	go func() { _ = cmd.Wait(); close(cp.kcmDone) }()
	return nil
}

// waitServiceCIDRReady waits for the ServiceCIDR the apiserver creates from its
// flags: before it is Ready, Service creates fail with "no ServiceCIDR".
func waitServiceCIDRReady(ctx context.Context, c kubernetes.Interface) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		sc, err := c.NetworkingV1().ServiceCIDRs().Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			last = err
			return false, nil
		}
		for _, cond := range sc.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == metav1.ConditionTrue {
				return true, nil
			}
		}
		last = fmt.Errorf("ServiceCIDR kubernetes %v not Ready yet: %+v", sc.Spec.CIDRs, sc.Status.Conditions)
		return false, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// Stop stops everything it started, in reverse order, and closes the logs.
func (cp *ControlPlane) Stop() error {
	var errs []error
	if cp.kcm != nil && cp.kcm.Process != nil {
		_ = cp.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-cp.kcmDone:
		case <-time.After(10 * time.Second):
			_ = cp.kcm.Process.Kill()
			<-cp.kcmDone
		}
		cp.kcm = nil
	}
	cp.stopRestarted()
	if cp.env != nil {
		if err := cp.env.Stop(); err != nil {
			errs = append(errs, err)
		}
		cp.env = nil
	}
	for _, c := range cp.logs {
		_ = c.Close()
	}
	cp.logs = nil
	if cp.tempDir {
		_ = os.RemoveAll(cp.Dir)
	}
	return errors.Join(errs...)
}

// Namespace creates a namespace with a generated name from prefix and the
// given labels/annotations. Without kube-controller-manager namespaces cannot
// be deleted, so callers on a local control plane just leave them: the whole
// etcd goes away at the end.
func Namespace(ctx context.Context, c kubernetes.Interface, prefix string, labels, annotations map[string]string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: strings.TrimSuffix(prefix, "-") + "-",
		Labels:       labels,
		Annotations:  annotations,
	}}
	got, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return got.Name, nil
}
