package existing

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

const releaseNamespace = "dualstack-webhook-system"

func TestServicesSuiteInExistingClusterMode(t *testing.T) {
	framework.NeedPrereq(t, framework.Prereq())
	if framework.UseExistingCluster() {
		t.Skip("already running against an existing cluster")
	}
	if testing.Short() {
		t.Skip("runs the services suite a second time; -short skips it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env, err := framework.NewLocalEnv(ctx, "existing-mode", framework.ControlPlaneOptions{
		ServiceCIDRs:      framework.DualStackCIDRs,
		ControllerManager: true, // the suite deletes its namespaces in this mode
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Close(t.Failed()); err != nil {
			t.Error(err)
		}
	}()
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bin, err := framework.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	// No --service-cidrs: like the chart's default, families come from the
	// cluster's ServiceCIDR objects.
	w, err := framework.StartWebhook(ctx, framework.WebhookOptions{
		Binary: bin, Name: "chartlike", Dir: env.Artifacts, Kubeconfig: env.Kubeconfig, Namespace: releaseNamespace,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
	}()
	nsSel, objSel := framework.ChartLikeSelectors("kube-system", "kube-public", "kube-node-lease", "default", releaseNamespace)
	// As the chart: the Service skip label keeps Services from the mutating
	// webhook only; the validating one checks the addresses they ask for.
	reg := framework.Registration{Name: "chartlike", URL: w.URL, CABundle: w.CABundle, NamespaceSelector: nsSel, MutatingObjectSelector: objSel}
	if err := framework.Register(ctx, env.Client, reg); err != nil {
		t.Fatal(err)
	}

	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The update differential repeats what the local run already proved
	// and is the slowest test: leave it out of this second run.
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-skip", "TestDifferentialUpdate", "./services/")
	cmd.Dir = filepath.Join(root, "e2e")
	cmd.Env = append(os.Environ(),
		framework.EnvExisting+"=true",
		"KUBECONFIG="+env.Kubeconfig,
		framework.EnvRequired+"=1",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	log := out.String()
	_ = os.WriteFile(filepath.Join(env.Artifacts, "services-existing-mode.log"), out.Bytes(), 0o644)
	var summary []string
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "differential:") ||
			strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "FAIL") {
			summary = append(summary, line)
		}
	}
	t.Logf("services suite in existing-cluster mode:\n%s", strings.Join(summary, "\n"))
	if runErr != nil {
		t.Fatalf("services suite failed in existing-cluster mode: %v\n%s", runErr, log)
	}
	// The mode must really have run the webhook-path tests, not skipped them all.
	for _, must := range []string{"--- PASS: TestDifferential", "--- PASS: TestDocExamples", "--- PASS: TestInvalidRejectedLikeTheAPIServer"} {
		if !strings.Contains(log, must) {
			t.Errorf("%q missing from the suite's output", must)
		}
	}
}
