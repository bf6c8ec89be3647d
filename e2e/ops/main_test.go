package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

// webhookNS is the webhook's namespace in these tests (pools, state, journal).
const webhookNS = "dualstack-webhook"

// cluster starts a local control plane for one test and a binary to drive.
type cluster struct {
	t   *testing.T
	env *framework.Env
	bin string
	ctx context.Context
}

func newCluster(t *testing.T, name, cidrs string, kcm bool) *cluster {
	t.Helper()
	framework.NeedPrereq(t, framework.Prereq())
	if framework.UseExistingCluster() {
		t.Skip("the ops scenarios rewrite ServiceCIDRs: they need a control plane of their own")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	env, err := framework.NewLocalEnv(ctx, "ops-"+name, framework.ControlPlaneOptions{ServiceCIDRs: cidrs, ControllerManager: kcm})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(t.Failed()); err != nil {
			t.Error(err)
		}
	})
	bin, err := framework.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, env: env, bin: bin, ctx: ctx}
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: webhookNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs the binary with --kubeconfig and --namespace added and returns
// stdout; a non-zero exit fails the test unless wantErr.
func (c *cluster) run(wantErr bool, args ...string) (string, string) {
	c.t.Helper()
	args = slices.Concat(args, []string{"--kubeconfig", c.env.Kubeconfig, "--namespace", webhookNS})
	cmd := exec.CommandContext(c.ctx, c.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	c.t.Logf("$ dualstack-webhook %s\n%s%s", strings.Join(args[:len(args)-4], " "), out.String(), errb.String())
	if (err != nil) != wantErr {
		c.t.Fatalf("dualstack-webhook %s: err=%v, wantErr=%v\nstdout:\n%s\nstderr:\n%s", args[0], err, wantErr, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// planJSON runs `plan` and decodes it.
func (c *cluster) plan(args ...string) ops.Plan {
	c.t.Helper()
	out, _ := c.run(false, slices.Concat([]string{"plan"}, args, []string{"-o", "json"})...)
	var p ops.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		c.t.Fatalf("plan output: %v\n%s", err, out)
	}
	return p
}

func (c *cluster) namespace(prefix string, labels map[string]string) string {
	c.t.Helper()
	ns, err := framework.Namespace(c.ctx, c.env.Client, prefix, labels, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return ns
}

// service creates a ClusterIP Service; ips may be empty (dynamic).
func (c *cluster) service(ns, name string, policy corev1.IPFamilyPolicy, families []corev1.IPFamily, ips ...string) *corev1.Service {
	c.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{
			IPFamilyPolicy: &policy, IPFamilies: families,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips
	}
	// A ServiceCIDR that apply reported Ready may not be served by the
	// apiserver's allocators yet (they follow it through an informer): an
	// address in it is refused as "does not match the current range" until
	// they catch up.
	var got *corev1.Service
	c.waitFor("create "+ns+"/"+name, func() (bool, string) {
		var err error
		got, err = c.env.Client.CoreV1().Services(ns).Create(c.ctx, s, metav1.CreateOptions{})
		if err != nil && len(ips) > 0 && strings.Contains(err.Error(), "does not match the current range") {
			return false, err.Error()
		}
		if err != nil {
			c.t.Fatalf("create %s/%s: %v", ns, name, err)
		}
		return true, ""
	})
	return got
}

func (c *cluster) get(ns, name string) *corev1.Service {
	c.t.Helper()
	s, err := c.env.Client.CoreV1().Services(ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// pools reads the pools document apply wrote.
func (c *cluster) pools() *alloc.PoolConfig {
	c.t.Helper()
	cm, err := c.env.Client.CoreV1().ConfigMaps(webhookNS).Get(c.ctx, ops.DefaultPoolsConfigMap, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	pc, err := alloc.ConfigFromConfigMap(cm)
	if err != nil {
		c.t.Fatal(err)
	}
	return pc
}

func poolNamed(pc *alloc.PoolConfig, name string) *alloc.PoolSpec {
	for i := range pc.Pools {
		if pc.Pools[i].Name == name {
			return &pc.Pools[i]
		}
	}
	return nil
}

// waitFor polls cond for up to two minutes.
func (c *cluster) waitFor(what string, cond func() (bool, string)) {
	c.t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(c.ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		ok, s := cond()
		last = s
		return ok, nil
	})
	if err != nil {
		c.t.Fatalf("waiting for %s: %v (last: %s)", what, err, last)
	}
}

func inPrefix(p string, ips ...string) bool {
	pp := netip.MustParsePrefix(p)
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || !pp.Contains(a) {
			return false
		}
	}
	return len(ips) > 0
}
