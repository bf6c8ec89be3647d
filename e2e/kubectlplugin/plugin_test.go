package kubectlplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

// A namespace other than the default one, so that a plugin ignoring -n
// reads nothing.
const webhookNS = "dsw-system"

const pools = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses:
    ipv4: ["10.96.0.16/28"]
    ipv6: ["fd00:10:96::100-fd00:10:96::1ff"]
`

// kubeconfig writes a copy of the control plane's kubeconfig whose current
// context points at a closed port, plus a context "real" with the working
// cluster: only a plugin that honours --context reaches the apiserver.
func kubeconfig(t *testing.T, src string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	if cur == nil {
		t.Fatalf("kubeconfig %s has no current context", src)
	}
	real := *cur
	cfg.Contexts["real"] = &real
	broken := *cfg.Clusters[cur.Cluster]
	broken.Server = "https://127.0.0.1:1"
	cfg.Clusters["broken"] = &broken
	dead := *cur
	dead.Cluster = "broken"
	cfg.Contexts["dead"] = &dead
	cfg.CurrentContext = "dead"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKubectlDualstack(t *testing.T) {
	framework.NeedPrereq(t, framework.Prereq())
	if framework.UseExistingCluster() {
		t.Skip("apply extend creates a ServiceCIDR: this test needs a control plane of its own")
	}
	kubectl, err := framework.Binary("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	// Installed from the krew manifest and archive that
	// plugins/krew/release.sh builds, as krew would install it.
	pathDir := installWithKrewManifest(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// kube-controller-manager: the new ServiceCIDR of `apply extend` only
	// becomes Ready through its service-cidr controller.
	env, err := framework.NewLocalEnv(ctx, "kubectlplugin", framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs, ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(t.Failed()); err != nil {
			t.Error(err)
		}
	})
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: webhookNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(webhookNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ops.DefaultPoolsConfigMap},
		Data:       map[string]string{alloc.ConfigMapKey: pools},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := kubeconfig(t, env.Kubeconfig)

	// kubectl runs the plugin; every flag after the plugin's name is the
	// plugin's. POD_NAMESPACE is cleared so only -n can name the namespace.
	run := func(stdin string, args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = append(os.Environ(), "PATH="+pathDir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kc, "POD_NAMESPACE=")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		t.Logf("$ kubectl %s\n%s%s", strings.Join(args, " "), out.String(), errb.String())
		return out.String(), errb.String(), err
	}

	t.Run("kubectl finds the plugin", func(t *testing.T) {
		out, _, err := run("", "plugin", "list", "--name-only")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "kubectl-dualstack") {
			t.Errorf("kubectl plugin list lacks kubectl-dualstack:\n%s", out)
		}
		out, _, err = run("", "dualstack", "help")
		if err != nil || !strings.Contains(out, "usage: kubectl dualstack") {
			t.Errorf("kubectl dualstack help: %v\n%s", err, out)
		}
		_, stderr, err := run("", "dualstack", "serve")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr, `unknown command "serve"`) {
			t.Errorf("kubectl dualstack serve: %v, stderr %q; want exit 2, unknown command", err, stderr)
		}
	})

	t.Run("status honours --context, -n and -o", func(t *testing.T) {
		// The current context is dead: without --context the plugin fails.
		if _, stderr, err := run("", "dualstack", "status", "-n", webhookNS); err == nil {
			t.Errorf("status through the dead current context succeeded")
		} else if !strings.Contains(stderr, "127.0.0.1:1") {
			t.Errorf("status did not try the current context's server: %s", stderr)
		}
		out, _, err := run("", "dualstack", "status", "--context", "real", "-n", webhookNS, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st ops.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("-o json: %v\n%s", err, out)
		}
		if st.Namespace != webhookNS || len(st.Pools) != 1 || st.Pools[0].Name != "general" {
			t.Errorf("status of namespace %q with pools %+v; want %s with pool general", st.Namespace, st.Pools, webhookNS)
		}
		// The long spellings, with =, and -o yaml.
		out, _, err = run("", "dualstack", "status", "--kubeconfig="+kc, "--context=real", "--namespace="+webhookNS, "-o", "yaml")
		if err != nil {
			t.Fatal(err)
		}
		var st2 ops.Status
		if err := yaml.Unmarshal([]byte(out), &st2); err != nil || st2.Namespace != webhookNS {
			t.Errorf("-o yaml: %v, namespace %q\n%s", err, st2.Namespace, out)
		}
		// Without -n: the default namespace, which has no pools ConfigMap,
		// so the implicit pool.
		out, _, err = run("", "dualstack", "status", "--context", "real", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st3 ops.Status
		if err := json.Unmarshal([]byte(out), &st3); err != nil {
			t.Fatal(err)
		}
		if st3.Namespace != "dualstack-webhook" || len(st3.Pools) != 1 || st3.Pools[0].Name != alloc.StaticBandPool {
			t.Errorf("status without -n: namespace %q, pools %+v; want dualstack-webhook with the implicit pool", st3.Namespace, st3.Pools)
		}
	})

	const newCIDR = "10.97.0.0/24"
	t.Run("plan and apply", func(t *testing.T) {
		out, _, err := run("", "dualstack", "plan", "extend", "--cidr", newCIDR, "--context", "real", "-n", webhookNS, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var p ops.Plan
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("plan -o json: %v\n%s", err, out)
		}
		if len(p.Steps) == 0 || p.Steps[0].ServiceCIDR == nil {
			t.Fatalf("plan extend has no ServiceCIDR step: %+v", p.Steps)
		}
		name := p.Steps[0].ServiceCIDR.Name
		if _, _, err := run("", "dualstack", "apply", "extend", "--cidr", newCIDR, "--context", "real", "-n", webhookNS, "--confirm"); err != nil {
			t.Fatal(err)
		}
		sc, err := env.Client.NetworkingV1().ServiceCIDRs().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			t.Fatalf("apply --confirm through kubectl created no ServiceCIDR %s", name)
		} else if err != nil {
			t.Fatal(err)
		}
		if len(sc.Spec.CIDRs) != 1 || sc.Spec.CIDRs[0] != newCIDR {
			t.Errorf("ServiceCIDR %s has %v, want [%s]", name, sc.Spec.CIDRs, newCIDR)
		}
		out, _, err = run("", "dualstack", "status", "--context", "real", "-n", webhookNS, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, newCIDR) {
			t.Errorf("status after apply does not show %s:\n%s", newCIDR, out)
		}
	})

	t.Run("convert", func(t *testing.T) {
		legacy := "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ipFamily: IPv6\n  ports:\n  - port: 80\n"
		out, _, err := run(legacy, "dualstack", "convert")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "ipFamilies:\n  - IPv6\n  ipFamilyPolicy: SingleStack\n") || strings.Contains(out, "ipFamily:") {
			t.Errorf("kubectl dualstack convert output:\n%s", out)
		}
	})
}
