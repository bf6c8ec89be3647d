package chart

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// HostArgs drops from the chart's container arguments those a host process
// must set itself (listeners, certificate files) and the leading "serve",
// keeping everything else (--namespace, --service-cidrs,
// --default-ip-family-policy, extraArgs, ...) for framework.WebhookOptions.ExtraArgs.
func HostArgs(chartArgs []string) []string {
	var out []string
	for _, a := range chartArgs {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch name {
		case "serve", "listen", "metrics-listen", "tls-cert-file", "tls-key-file":
			continue
		}
		out = append(out, a)
	}
	return out
}

// impersonatingKubeconfig writes a copy of the control plane's kubeconfig
// that acts as user (e.g. a ServiceAccount), so a host process runs with
// exactly that identity's RBAC.
func impersonatingKubeconfig(t *testing.T, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(suite.CP.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("kubeconfig %s has no current context", suite.CP.KubeconfigPath)
	}
	cfg.AuthInfos[ctx.AuthInfo].Impersonate = user
	path := filepath.Join(t.TempDir(), "kubeconfig-as-sa")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestChartRegistrationWithBinary runs the real dualstack-webhook binary as
// a host process with the chart's own arguments, under the chart's own
// ServiceAccount and RBAC (impersonated), registered with the chart's own
// webhook configurations rewritten to `url:`. It proves the three agree: the
// binary starts and becomes ready with only the permissions the chart
// grants, the registration routes Services to it, and the chart's
// --default-ip-family-policy reaches the Services it admits.
func TestChartRegistrationWithBinary(t *testing.T) {
	suite.Need(t)
	ctx := context.Background()
	const rel, ns = "run", "dsw-run"
	manifest, err := Template(ctx, rel, ns, "--set", "config.defaultIPFamilyPolicy=PreferDualStack")
	if err != nil {
		t.Fatal(err)
	}

	// The chart's identity: ServiceAccount and RBAC only (no Deployment or
	// Service-backed registration: nothing could run or route here).
	sa := chartIdentity(ctx, t, manifest, ns)
	if sa == "" {
		t.Fatal("the chart renders no ServiceAccount")
	}

	// A pools ConfigMap (the static band's addresses, as one pool): the
	// binary records the document it applies in <pools>-applied, a write
	// the chart's RBAC must allow.
	const poolsDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: band
pools:
- name: band
  addresses:
    ipv4: ["10.96.0.1-10.96.1.0"]
    ipv6: ["fd00:10:96::1-fd00:10:96::100"]
`
	poolsName := rel + "-dualstack-webhook-pools"
	if _, err := suite.CP.Client.CoreV1().ConfigMaps(ns).Create(ctx, framework.PoolsConfigMap(ns, poolsName, poolsDoc), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	bin, err := framework.BuildWebhook(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chartArgs, err := ServeArgs(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := framework.StartWebhook(ctx, framework.WebhookOptions{
		Binary:     bin,
		Name:       "chart-args",
		Dir:        dir,
		Kubeconfig: impersonatingKubeconfig(t, sa),
		ExtraArgs:  HostArgs(chartArgs),
	})
	if err != nil {
		t.Fatalf("the binary did not become ready with the chart's args %v as %s: %v", chartArgs, sa, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(w.LogPath); err == nil {
				t.Logf("webhook log:\n%s", b)
			}
		}
		_ = w.Stop()
	})
	t.Logf("running %s", strings.Join(w.Args, " "))
	// Written at start, before ready, with the chart's permissions only.
	rec, err := suite.CP.Client.CoreV1().ConfigMaps(ns).Get(ctx, poolsName+"-applied", metav1.GetOptions{})
	if err != nil || rec.Data["pools.yaml"] != poolsDoc {
		t.Errorf("record of the applied pools as the chart's ServiceAccount: %v %v", rec.Data, err)
	}

	m, v, err := URLWebhooks(manifest, w.URL, w.CABundle)
	if err != nil {
		t.Fatal(err)
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

	target, err := framework.Namespace(ctx, suite.CP.Client, "chart-run", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The apiserver picks up new configurations asynchronously.
	if err := framework.WaitEffective(ctx, suite.CP.Client, target, "", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	mk := func(name string, labels map[string]string) *corev1.Service {
		t.Helper()
		s, err := suite.CP.Client.CoreV1().Services(target).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
		return s
	}
	got := mk("defaulted", nil)
	if got.Spec.IPFamilyPolicy == nil || *got.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack || len(got.Spec.ClusterIPs) != 2 {
		t.Errorf("Service through the chart's webhooks: policy %v, clusterIPs %v; want PreferDualStack (the chart's --default-ip-family-policy) with two IPs",
			got.Spec.IPFamilyPolicy, got.Spec.ClusterIPs)
	}
	skipped := mk("skipped", map[string]string{"dualstack-webhook.io/skip": "true"})
	if skipped.Spec.IPFamilyPolicy == nil || *skipped.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
		t.Errorf("Service labelled skip: policy %v, want the apiserver's SingleStack (the webhook must not see it)", skipped.Spec.IPFamilyPolicy)
	}
	if code, _, err := w.Get("/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz after the run: %d %v", code, err)
	}
}

// chartIdentity creates namespace ns and the ServiceAccount and RBAC objects
// of manifest (a release in ns), and returns the ServiceAccount's user name
// ("" when the chart renders none).
func chartIdentity(ctx context.Context, t *testing.T, manifest []byte, ns string) string {
	t.Helper()
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	typed, _, err := Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var sa string
	for _, o := range typed {
		if err := createRBAC(ctx, o); err != nil {
			t.Fatal(err)
		}
		if s, ok := o.(*corev1.ServiceAccount); ok {
			sa = "system:serviceaccount:" + ns + ":" + s.Name
		}
	}
	return sa
}

// createRBAC creates the chart's ServiceAccount and RBAC objects.
func createRBAC(ctx context.Context, o runtime.Object) error {
	var err error
	switch x := o.(type) {
	case *corev1.ServiceAccount:
		_, err = suite.CP.Client.CoreV1().ServiceAccounts(x.Namespace).Create(ctx, x, metav1.CreateOptions{})
	case *rbacv1.ClusterRole:
		_, err = suite.CP.Client.RbacV1().ClusterRoles().Create(ctx, x, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = suite.CP.Client.RbacV1().ClusterRoleBindings().Create(ctx, x, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = suite.CP.Client.RbacV1().Roles(x.Namespace).Create(ctx, x, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = suite.CP.Client.RbacV1().RoleBindings(x.Namespace).Create(ctx, x, metav1.CreateOptions{})
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
