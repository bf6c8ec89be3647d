package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zaptest"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/certs"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

var suite = &framework.Suite{
	Name:                 "chart e2e",
	NeedsOwnControlPlane: "the chart suite installs and uninstalls releases in its own control plane",
	Options:              framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs},
	Prereq:               func() error { _, err := Helm(); return err },
	Setup:                func(cp *framework.ControlPlane) error { return installCertManagerCRDs(cp.Config) },
}

func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }

// certManagerCRDs is deploy/crds of the cert-manager module this module
// requires (the version the typed checks below compile against).
func certManagerCRDs() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		return "", fmt.Errorf("locating the cert-manager module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	return dir, nil
}

func installCertManagerCRDs(cfg *rest.Config) error {
	dir, err := certManagerCRDs()
	if err != nil {
		return err
	}
	_, err = envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{dir}, ErrorIfPathMissing: true, MaxTime: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("installing cert-manager CRDs from %s: %w", dir, err)
	}
	return nil
}

// run runs a helm or kubectl command against the control plane.
func run(t *testing.T, stdin []byte, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+suite.CP.KubeconfigPath,
		"HELM_CACHE_HOME="+filepath.Join(t.TempDir(), "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(t.TempDir(), "config"),
		"HELM_DATA_HOME="+filepath.Join(t.TempDir(), "data"),
	)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func valuesFile(t *testing.T, name string) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "charts", "testdata", "values", name+".yaml")
}

const release = "dsw"

// TestHelmInstall installs the chart in each certs mode into the real
// apiserver (with cert-manager's CRDs): first a strict server-side dry run
// of `helm template` (unknown or misspelt fields are errors, including in
// cert-manager objects), then `helm install`, then every rendered object is
// read back. Releases are installed one at a time and uninstalled, because
// a release's fail-closed pinning webhook (whose pods cannot run here) would
// reject the next release's Service.
func TestHelmInstall(t *testing.T) {
	suite.Need(t)
	helm, _ := Helm()
	kubectl, err := framework.Binary("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	chartDir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, mode string
		args       []string
	}{
		{"cert-manager", "certManager", nil},
		{"self-bootstrap", "selfBootstrap", []string{"-f", valuesFile(t, "self-bootstrap")}},
		{"secret", "secret", []string{"-f", valuesFile(t, "secret")}},
		// No Prometheus Operator CRDs here; the monitoring objects are
		// covered by the golden files.
		{"full", "certManager", []string{"-f", valuesFile(t, "full"), "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false"}},
		// Defaulting by MutatingAdmissionPolicy with no webhook registered at
		// all, so that the apiserver alone must apply the default.
		{"policy", "certManager", []string{"--set", "defaulting.mode=policy", "--set", "config.defaultIPFamilyPolicy=PreferDualStack",
			"--set", "webhook.pinning.enabled=false", "--set", "webhook.validating.enabled=false", "--set", "webhook.poolsValidation.enabled=false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ns := "dsw-" + tc.name
			if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			manifest, err := Template(ctx, release, ns, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := run(t, manifest, kubectl, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-"); err != nil {
				t.Fatalf("strict server-side dry run refused the rendered chart: %v\n%s", err, out)
			}
			args := append([]string{"install", release, chartDir, "-n", ns, "--wait=false", "--timeout", "2m"}, tc.args...)
			if out, err := run(t, nil, helm, args...); err != nil {
				t.Fatalf("helm install: %v\n%s", err, out)
			}
			t.Cleanup(func() {
				if out, err := run(t, nil, helm, "uninstall", release, "-n", ns, "--wait=false"); err != nil {
					t.Errorf("helm uninstall: %v\n%s", err, out)
				}
			})
			out, err := run(t, manifest, kubectl, "get", "-n", ns, "-f", "-", "-o", "name")
			if err != nil {
				t.Fatalf("reading back the rendered objects: %v\n%s", err, out)
			}
			t.Logf("installed:\n%s", out)
			if want, got := countDocs(manifest), len(strings.Fields(out)); got != want {
				t.Fatalf("%d objects read back, %d rendered", got, want)
			}

			switch tc.mode {
			case "certManager":
				checkCAPattern(t, manifest)
			case "selfBootstrap":
				checkSelfBootstrapRBAC(t, manifest, ns)
			}
			if tc.name == "cert-manager" {
				checkRegistrationScope(t, ns)
			}
			if tc.name == "policy" {
				checkPolicyDefaults(t, ns)
			} else if tc.mode != "secret" {
				checkUpgradeKeepsCABundle(t, helm, chartDir, ns, tc.mode, tc.args)
			}
		})
	}
}

func countDocs(manifest []byte) int {
	n := 0
	for doc := range strings.SplitSeq(string(manifest), "\n---") {
		if !isEmptyDoc(doc) {
			n++
		}
	}
	return n
}

// checkCAPattern decodes the cert-manager objects with cert-manager's own
// types (strictly: a field cert-manager does not know is an error) and
// checks the chain selfSigned Issuer → CA Certificate → CA Issuer → serving
// Certificate.
func checkCAPattern(t *testing.T, manifest []byte) {
	t.Helper()
	_, other, err := Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	issuers := map[string]*cmapi.Issuer{}
	var certsByName = map[string]*cmapi.Certificate{}
	for _, doc := range other {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "Issuer":
			var i cmapi.Issuer
			if err := yaml.UnmarshalStrict(doc, &i); err != nil {
				t.Fatalf("Issuer: %v", err)
			}
			issuers[i.Name] = &i
		case "Certificate":
			var c cmapi.Certificate
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatalf("Certificate: %v", err)
			}
			certsByName[c.Name] = &c
		}
	}
	var ca, serving *cmapi.Certificate
	for _, c := range certsByName {
		if c.Spec.IsCA {
			ca = c
		} else {
			serving = c
		}
	}
	if ca == nil || serving == nil {
		t.Fatalf("want a CA and a serving Certificate, got %v", certsByName)
	}
	root := issuers[ca.Spec.IssuerRef.Name]
	if root == nil || root.Spec.SelfSigned == nil {
		t.Fatalf("CA Certificate issued by %q, want a selfSigned Issuer", ca.Spec.IssuerRef.Name)
	}
	caIssuer := issuers[serving.Spec.IssuerRef.Name]
	if caIssuer == nil || caIssuer.Spec.CA == nil || caIssuer.Spec.CA.SecretName != ca.Spec.SecretName {
		t.Fatalf("serving Certificate issued by %q, want the CA Issuer backed by Secret %s", serving.Spec.IssuerRef.Name, ca.Spec.SecretName)
	}
	if ca.Spec.Duration == nil || serving.Spec.Duration == nil || ca.Spec.Duration.Duration <= 10*serving.Spec.Duration.Duration {
		t.Errorf("CA should be long-lived compared with the serving certificate: %v vs %v", ca.Spec.Duration, serving.Spec.Duration)
	}
}

// checkRegistrationScope asks the real apiserver which Service writes reach
// the installed webhooks. No webhook pod can run here, so a call is visible
// as "failed calling webhook" from the fail-closed pinning webhook; every
// write the chart means to leave alone must succeed.
func checkRegistrationScope(t *testing.T, releaseNS string) {
	t.Helper()
	ctx := context.Background()
	c := suite.CP.Client
	mk := func(labels map[string]string) string {
		ns, err := framework.Namespace(ctx, c, "scope", labels, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	plainNS := mk(nil)
	skipNS := mk(map[string]string{"dualstack-webhook.io/skip": "true"})
	svc := func(mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "scope-"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}
		if mut != nil {
			mut(s)
		}
		return s
	}
	// wantWebhook is the webhook whose call fails first ("": none is
	// called): the fail-closed pinning webhook for an ordinary Service;
	// for a skip-labelled one the validating webhook, which still checks
	// the addresses such a Service asks for.
	tests := []struct {
		name        string
		ns          string
		svc         *corev1.Service
		wantWebhook string
	}{
		{"a ClusterIP Service in an ordinary namespace is sent to the webhooks", plainNS, svc(nil), "pinning.dualstack-webhook.io"},
		{"a Service labelled dualstack-webhook.io/skip=true is sent to the validating webhook only", plainNS,
			svc(func(s *corev1.Service) { s.Labels = map[string]string{"dualstack-webhook.io/skip": "true"} }), "validating.dualstack-webhook.io"},
		{"a Service in a namespace labelled skip is not", skipNS, svc(nil), ""},
		{"an ExternalName Service is not (matchConditions)", plainNS, svc(func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
			s.Spec.ExternalName = "example.com"
			s.Spec.Ports = nil
		}), ""},
		{"kube-system is not", "kube-system", svc(nil), ""},
		{"the release namespace is not", releaseNS, svc(nil), ""},
	}
	// The apiserver loads new configurations asynchronously: wait until the
	// positive case is intercepted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.CoreV1().Services(plainNS).Create(ctx, svc(nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "failed calling webhook") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installed webhooks never intercepted a Service create (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CoreV1().Services(tc.ns).Create(ctx, tc.svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			called := err != nil && strings.Contains(err.Error(), "failed calling webhook")
			if called != (tc.wantWebhook != "") {
				t.Fatalf("webhook called = %v, want %q (err: %v)", called, tc.wantWebhook, err)
			}
			if called && !strings.Contains(err.Error(), `"`+tc.wantWebhook+`"`) {
				t.Errorf("the failure should come from %s: %v", tc.wantWebhook, err)
			}
			if tc.wantWebhook == "" && err != nil {
				t.Fatalf("create failed: %v", err)
			}
		})
	}
}

// checkUpgradeKeepsCABundle: the chart never renders caBundle in the
// certManager and selfBootstrap modes; whoever injected it (cainjector, or
// the webhook itself) must not see `helm upgrade` wipe it, or every upgrade
// would break the webhook until the next injection.
func checkUpgradeKeepsCABundle(t *testing.T, helm, chartDir, ns, mode string, installArgs []string) {
	t.Helper()
	ctx := context.Background()
	ar := suite.CP.Client.AdmissionregistrationV1()
	name := release + "-dualstack-webhook"
	bundle := []byte("-----BEGIN CERTIFICATE-----\ninjected\n-----END CERTIFICATE-----\n")
	if mode == "certManager" {
		// Play cainjector.
		m, err := ar.MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range m.Webhooks {
			m.Webhooks[i].ClientConfig.CABundle = bundle
		}
		if _, err := ar.MutatingWebhookConfigurations().Update(ctx, m, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		v, err := ar.ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig.CABundle = bundle
		}
		if _, err := ar.ValidatingWebhookConfigurations().Update(ctx, v, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"upgrade", release, chartDir, "-n", ns, "--wait=false"}, installArgs...)
	args = append(args, "--set", "replicaCount=3", "--set", "webhook.defaulting.timeoutSeconds=4")
	if out, err := run(t, nil, helm, args...); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	m, err := ar.MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ar.ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upgraded := false
	for _, w := range m.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			t.Errorf("helm upgrade wiped the caBundle of %s", w.Name)
		}
		if w.Name == "defaulting.dualstack-webhook.io" && *w.TimeoutSeconds == 4 {
			upgraded = true
		}
	}
	for _, w := range v.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			t.Errorf("helm upgrade wiped the caBundle of %s", w.Name)
		}
	}
	if !upgraded {
		t.Error("the upgrade did not reach the webhook configuration (timeoutSeconds unchanged): the check proved nothing")
	}
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// checkSelfBootstrapRBAC runs the Bootstrap source with the chart's
// ServiceAccount (impersonated) and the chart's rendered arguments: the RBAC
// must be enough to create the CA Secret and patch caBundle into the
// installed configurations, and must not reach anything else.
func checkSelfBootstrapRBAC(t *testing.T, manifest []byte, ns string) {
	t.Helper()
	ctx := context.Background()
	args, err := ServeArgs(manifest)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(suite.CP.Config)
	sa := "system:serviceaccount:" + ns + ":" + release + "-dualstack-webhook"
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Parse the chart's arguments with the binary's own flag definitions.
	var bf certs.BootstrapFlags
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true // the non-certificate flags
	bf.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("chart args %v: %v", args, err)
	}
	if !bf.Enabled() {
		t.Fatalf("chart args %v do not enable self-bootstrap", args)
	}
	bc, err := bf.Config(client, flagValue(args, "namespace"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("chart args %v: %v", args, err)
	}
	boot, err := certs.NewBootstrap(bc)
	if err != nil {
		t.Fatalf("chart args %v: %v", args, err)
	}
	if err := boot.Sync(ctx); err != nil {
		t.Fatalf("Bootstrap as %s with the chart's RBAC: %v", sa, err)
	}
	m, err := suite.CP.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, release+"-dualstack-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			t.Errorf("webhook %s has no caBundle after bootstrap", w.Name)
		}
	}
	// Least privilege: what the ServiceAccount must NOT be able to do.
	denied := []authorizationv1.ResourceAttributes{
		{Namespace: ns, Verb: "get", Resource: "secrets", Name: "someone-elses"},
		{Namespace: ns, Verb: "list", Resource: "secrets"},
		{Namespace: "default", Verb: "get", Resource: "secrets", Name: flagValue(args, "tls-bootstrap-secret")},
		{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "another-webhook"},
		{Verb: "create", Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations"},
		{Namespace: "default", Verb: "create", Resource: "configmaps"},
		{Namespace: "default", Verb: "update", Resource: "services", Name: "kubernetes"},
	}
	for _, ra := range denied {
		rev, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rev.Status.Allowed {
			t.Errorf("%s may %s %s/%s in %q: more than it needs", sa, ra.Verb, ra.Resource, ra.Name, ra.Namespace)
		}
	}
}

// checkPolicyDefaults: with defaulting.mode=policy and no webhook at all, a
// Service created in an ordinary namespace gets the configured default
// (PreferDualStack: both families on this dual-stack cluster) from the
// installed MutatingAdmissionPolicy; the release namespace is excluded.
func checkPolicyDefaults(t *testing.T, releaseNS string) {
	t.Helper()
	ctx := context.Background()
	c := suite.CP.Client
	if n, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{}); err != nil || len(n.Items) != 0 {
		t.Fatalf("want no mutating webhook registered: %v %v", n, err)
	}
	ns, err := framework.Namespace(ctx, c, "policy", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := func() *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	var got *corev1.Service
	// The apiserver loads new policies asynchronously.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = c.CoreV1().Services(ns).Create(ctx, plain(), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.IPFamilyPolicy != nil && *got.Spec.IPFamilyPolicy == corev1.IPFamilyPolicyPreferDualStack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installed policy never defaulted a Service: %+v", got.Spec)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(got.Spec.IPFamilies) != 2 || len(got.Spec.ClusterIPs) != 2 {
		t.Errorf("PreferDualStack Service on a dual-stack cluster: families %v clusterIPs %v", got.Spec.IPFamilies, got.Spec.ClusterIPs)
	}
	got, err = c.CoreV1().Services(releaseNS).Create(ctx, plain(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Spec.IPFamilyPolicy; p == nil || *p != corev1.IPFamilyPolicySingleStack {
		t.Errorf("the release namespace is excluded: want SingleStack, got %v", p)
	}
}
