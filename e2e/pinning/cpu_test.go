package pinning

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// clockTick is USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100 on
// every Linux this runs on).
const clockTick = 10 * time.Millisecond

// procs are the processes whose CPU time the benchmark charges to creates:
// kube-apiserver, its etcd and the webhook replicas (not the test process,
// whose clients and proxy cost the same or are not part of a deployment).
type procs struct {
	apiserver, etcd int
	webhooks        []int
}

// findProcs locates the control plane of env and the given webhooks by their
// command lines (ports are unique per run).
func findProcs(env *framework.Env, hooks []*framework.Webhook) (procs, error) {
	var p procs
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		return p, err
	}
	cmdlines := map[int][]string{}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return p, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		cmdlines[pid] = strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
	}
	find := func(pred func([]string) bool) int {
		for pid, args := range cmdlines {
			if pred(args) {
				return pid
			}
		}
		return 0
	}
	has := func(args []string, s string) bool {
		for _, a := range args {
			if a == s {
				return true
			}
		}
		return false
	}
	var etcdURL string
	p.apiserver = find(func(args []string) bool {
		if !strings.HasSuffix(args[0], "kube-apiserver") || !has(args, "--secure-port="+u.Port()) {
			return false
		}
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--etcd-servers="); ok {
				etcdURL = v
			}
		}
		return true
	})
	if p.apiserver == 0 || etcdURL == "" {
		return p, fmt.Errorf("kube-apiserver with --secure-port=%s not found", u.Port())
	}
	p.etcd = find(func(args []string) bool {
		return strings.HasSuffix(args[0], "etcd") && has(args, "--listen-client-urls="+etcdURL)
	})
	if p.etcd == 0 {
		return p, fmt.Errorf("etcd listening on %s not found", etcdURL)
	}
	for _, w := range hooks {
		listen := strings.TrimPrefix(w.URL, "https://")
		pid := find(func(args []string) bool {
			for i := 0; i+1 < len(args); i++ {
				if args[i] == "--listen" && args[i+1] == listen {
					return true
				}
			}
			return false
		})
		if pid == 0 {
			return p, fmt.Errorf("webhook %s not found", w.URL)
		}
		p.webhooks = append(p.webhooks, pid)
	}
	return p, nil
}

// cpu returns the user+system CPU time of a process (0 once it is gone).
func cpu(pid int) time.Duration {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// sample is the CPU time of the control plane and of the webhooks.
func (p procs) sample() (controlPlane, webhooks time.Duration) {
	controlPlane = cpu(p.apiserver) + cpu(p.etcd)
	for _, pid := range p.webhooks {
		webhooks += cpu(pid)
	}
	return controlPlane, webhooks
}
