package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Components of a control plane that Restart can restart.
const (
	KubeAPIServer = "kube-apiserver"
	Etcd          = "etcd"
)

// restarted is a component process started by Restart (envtest started the
// first one; it reaps that one itself).
type restarted struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Restart stops one component of the control plane with sig (SIGTERM: a
// graceful stop, SIGKILL: a crash) and starts it again with exactly the same
// command line and environment — same ports, same data directory (etcd),
// same certificates (kube-apiserver) — so that every client, webhook and
// kubeconfig keeps working once it is back. It returns when the apiserver
// answers /readyz again, with how long the component was down (from the
// signal to ready). Logs of the new process are appended to the
// component's log. Other suites' control planes are never touched: the
// process is found by the ports of this one.
func (cp *ControlPlane) Restart(ctx context.Context, component string, sig syscall.Signal) (time.Duration, error) {
	if cp.env == nil {
		return 0, errors.New("control plane not running")
	}
	start := time.Now()
	var argv, environ []string
	if r := cp.restarted[component]; r != nil {
		argv, environ = r.cmd.Args, r.cmd.Env
		if err := r.cmd.Process.Signal(sig); err != nil {
			return 0, fmt.Errorf("signal %s: %w", component, err)
		}
		select {
		case <-r.done:
		case <-time.After(stopTimeout):
			cp.Forced = append(cp.Forced, fmt.Sprintf("%s did not stop within %s of %s: killed", component, stopTimeout, sig))
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		_ = r.log.Close()
	} else {
		pid, err := cp.findProcess(component)
		if err != nil {
			return 0, err
		}
		if argv, err = procStrings(pid, "cmdline"); err != nil {
			return 0, err
		}
		if environ, err = procStrings(pid, "environ"); err != nil {
			return 0, err
		}
		if err := syscall.Kill(pid, sig); err != nil {
			return 0, fmt.Errorf("signal %s (pid %d): %w", component, pid, err)
		}
		// envtest waits for (reaps) its own child; the pid is gone then.
		// A graceful stop that takes longer than stopTimeout is ended by
		// SIGKILL, and said so in the log.
		gone := func(context.Context) (bool, error) { return exited(pid), nil }
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, stopTimeout, true, gone); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			cp.Forced = append(cp.Forced, fmt.Sprintf("%s did not stop within %s of %s: killed", component, stopTimeout, sig))
			if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, gone); err != nil {
				return 0, fmt.Errorf("%s (pid %d) still running after SIGKILL: %w", component, pid, err)
			}
		}
	}
	logFile, err := os.OpenFile(filepath.Join(cp.Dir, component+".log"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(logFile, "\n# --- restarted by the e2e framework after %s at %s ---\n", sig, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The old listener's port can take a moment to be released after a
	// graceful stop; retry the start while the new process exits at once.
	var started *restarted
	for attempt := 1; ; attempt++ {
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			return 0, fmt.Errorf("start %s: %w", component, err)
		}
		r := &restarted{cmd: cmd, done: make(chan struct{}), log: logFile}
		go func() { _ = cmd.Wait(); close(r.done) }()
		select {
		case <-r.done:
			if attempt == 5 {
				_ = logFile.Close()
				return 0, fmt.Errorf("%s exited right after its restart (%v); log %s", component, cmd.ProcessState, logFile.Name())
			}
			time.Sleep(time.Second)
			cmd = exec.Command(argv[0], argv[1:]...)
			cmd.Env = environ
			cmd.Stdout, cmd.Stderr = logFile, logFile
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			continue
		case <-time.After(500 * time.Millisecond):
		}
		started = r
		break
	}
	if cp.restarted == nil {
		cp.restarted = map[string]*restarted{}
	}
	cp.restarted[component] = started
	if err := cp.WaitReady(ctx, 2*time.Minute); err != nil {
		return time.Since(start), fmt.Errorf("after restarting %s: %w", component, err)
	}
	return time.Since(start), nil
}

// WaitReady waits until the apiserver answers GET /readyz with 200 (etcd
// reachable included).
func (cp *ControlPlane) WaitReady(ctx context.Context, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var code int
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(rctx).StatusCode(&code).Raw()
		if err == nil && code == http.StatusOK {
			return true, nil
		}
		last = fmt.Sprintf("HTTP %d %v %s", code, err, bytes.TrimSpace(body))
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("apiserver not ready: %w (last: %s)", err, last)
	}
	return nil
}

// findProcess finds the component of this control plane among the live
// processes by its ports: the apiserver's --secure-port, etcd's client URL.
func (cp *ControlPlane) findProcess(component string) (int, error) {
	var marker string
	switch component {
	case KubeAPIServer:
		u := cp.Config.Host
		i := strings.LastIndex(u, ":")
		if i < 0 {
			return 0, fmt.Errorf("apiserver host %q has no port", u)
		}
		marker = "--secure-port=" + strings.TrimSuffix(u[i+1:], "/")
	case Etcd:
		if cp.env.ControlPlane.Etcd == nil || cp.env.ControlPlane.Etcd.URL == nil {
			return 0, errors.New("etcd URL unknown")
		}
		marker = cp.env.ControlPlane.Etcd.URL.String()
	default:
		return 0, fmt.Errorf("unknown component %q (want %s or %s)", component, KubeAPIServer, Etcd)
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		args, err := procStrings(pid, "cmdline")
		if err != nil || len(args) == 0 || filepath.Base(args[0]) != component {
			continue
		}
		for _, a := range args {
			if strings.Contains(a, marker) {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no %s process with %s", component, marker)
}

// stopTimeout bounds a graceful stop before Restart kills the process.
const stopTimeout = 60 * time.Second

// exited: the process is gone, or a zombie nobody reaped yet.
func exited(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// procStrings reads a NUL-separated /proc/<pid>/<file>.
func procStrings(pid int, file string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// stopRestarted stops the processes Restart started (SIGTERM, then
// SIGKILL): the apiserver before etcd, as envtest does.
func (cp *ControlPlane) stopRestarted() {
	for _, c := range []string{KubeAPIServer, Etcd} {
		r := cp.restarted[c]
		if r == nil {
			continue
		}
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		_ = r.log.Close()
	}
	cp.restarted = nil
}
