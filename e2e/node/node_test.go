//go:build e2enode

package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

const (
	release   = "dsw"
	releaseNS = "dualstack-webhook-system"
	// The chart's fullname for release "dsw" (no override).
	deployName = "dsw-dualstack-webhook"
	leaseName  = "dualstack-webhook-reconciler"
)

type env struct {
	kubeconfig, helm, kubectl, chart, imageRepo, imageTag, sock string
	c                                                           kubernetes.Interface
	artifacts                                                   string
	figures                                                     []string
}

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{kubeconfig: os.Getenv("E2E_NODE_KUBECONFIG"), sock: os.Getenv("E2E_NODE_CONTAINERD")}
	image := os.Getenv("E2E_NODE_IMAGE")
	if e.kubeconfig == "" || image == "" || e.sock == "" {
		t.Fatal("E2E_NODE_KUBECONFIG, E2E_NODE_IMAGE and E2E_NODE_CONTAINERD must be set: run `make e2e-node`")
	}
	i := strings.LastIndex(image, ":")
	e.imageRepo, e.imageTag = image[:i], image[i+1:]
	var err error
	if e.helm, err = framework.Binary("helm"); err != nil {
		t.Fatal(err)
	}
	if e.kubectl, err = framework.Binary("kubectl"); err != nil {
		t.Fatal(err)
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e.chart = filepath.Join(root, "charts", "dualstack-webhook")
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	if e.c, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if e.artifacts, err = framework.ArtifactsDir("node"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.collect(t)
		} else {
			_ = os.RemoveAll(e.artifacts)
		}
	})
	return e
}

// run runs helm or kubectl against the node.
func (e *env) run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	home := filepath.Join(os.TempDir(), "dsw-node-helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig,
		"HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) must(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := e.run(t, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

// collect keeps what explains a failure: the Pods' logs (current and
// previous), describe, events of every namespace.
func (e *env) collect(t *testing.T) {
	for name, args := range map[string][]string{
		"pods-describe.txt":    {"describe", "pods", "-A"},
		"events.txt":           {"get", "events", "-A", "--sort-by=.lastTimestamp"},
		"objects.txt":          {"get", "all,leases,configmaps,secrets,mutatingwebhookconfigurations,validatingwebhookconfigurations", "-A", "-o", "wide"},
		"webhook.log":          {"logs", "-n", releaseNS, "-l", "app.kubernetes.io/name=dualstack-webhook", "--all-containers", "--prefix", "--tail=-1"},
		"webhook-previous.log": {"logs", "-n", releaseNS, "-l", "app.kubernetes.io/name=dualstack-webhook", "--all-containers", "--prefix", "--tail=-1", "--previous"},
		"node.txt":             {"describe", "node"},
	} {
		out, _ := e.run(t, e.kubectl, args...)
		_ = os.WriteFile(filepath.Join(e.artifacts, name), []byte(out), 0o644)
	}
	t.Logf("artifacts in %s (node logs: e2e/_artifacts/node-logs-* from make e2e-node)", e.artifacts)
}

func (e *env) figure(t *testing.T, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	t.Log("FIGURE " + s)
	e.figures = append(e.figures, s)
}

func (e *env) helmInstallArgs(extra ...string) []string {
	return append([]string{"--namespace", releaseNS,
		"--set", "image.repository=" + e.imageRepo, "--set", "image.tag=" + e.imageTag,
		// The image is imported, never pulled: a wrong tag fails at once
		// (ErrImageNeverPull) instead of reaching for a registry.
		"--set", "image.pullPolicy=Never",
		"--set", "replicaCount=3", "--wait", "--timeout", "5m"}, extra...)
}

// TestNode is one ordered story (each step needs the one before): install,
// serve through the Service, the services suite, disruption under load,
// certificate modes, uninstall.
func TestNode(t *testing.T) {
	e := setup(t)
	steps := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"InstallReady", testInstallReady},
		{"RegisteredThroughService", testRegisteredThroughService},
		{"SelfBootstrapCertificate", testSelfBootstrapCertificate},
		{"ServicesSuite", testServicesSuite},
		{"DisruptionUnderLoad", testDisruptionUnderLoad},
		{"SecretMode", testSecretMode},
		{"Uninstall", testUninstall},
		{"CertManagerMode", testCertManagerMode},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, e) }) {
			t.Fatalf("step %s failed; later steps depend on it", s.name)
		}
	}
	t.Logf("figures (this run):\n  %s", strings.Join(e.figures, "\n  "))
}

// testInstallReady: the release namespace enforces the restricted Pod
// Security level, helm install (image reference and replica count are the only
// changed values; selfBootstrap certificates), all three Pods Ready.
func testInstallReady(t *testing.T, e *env) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	}}}
	if _, err := e.c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The label really enforces: a Pod running as root is refused here.
	root := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "root-probe"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: e.imageRepo + ":" + e.imageTag}},
	}}
	// (The namespace's default ServiceAccount appears a moment after it.)
	var err error
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err = e.c.CoreV1().Pods(releaseNS).Create(ctx, root, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil || !strings.Contains(err.Error(), `serviceaccount "default" not found`), nil
	})
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a non-restricted Pod in %s: err %v, want a PodSecurity violation", releaseNS, err)
	}
	start := time.Now()
	e.must(t, e.helm, append([]string{"install", release, e.chart}, e.helmInstallArgs("--set", "certs.mode=selfBootstrap")...)...)
	waitDeploymentReady(t, e, 3, 5*time.Minute)
	e.figure(t, "helm install -> 3/3 Pods Ready: %s", time.Since(start).Round(100*time.Millisecond))
	pods := webhookPods(t, e)
	if len(pods) != 3 {
		t.Fatalf("%d webhook Pods, want 3", len(pods))
	}
	for _, p := range pods {
		c := p.Spec.Containers[0]
		if c.Image != e.imageRepo+":"+e.imageTag {
			t.Errorf("Pod %s runs %s", p.Name, c.Image)
		}
		// The image, as containerd imported it, says USER 65532:65532 (the
		// ImageID is the config's digest) and the process really runs so.
		if len(p.Status.ContainerStatuses) == 0 {
			t.Fatalf("Pod %s: no container status", p.Name)
		}
		st := p.Status.ContainerStatuses[0]
		cfg := e.must(t, "ctr", "--address", e.sock, "-n", "k8s.io", "content", "get", st.ImageID)
		var ic struct {
			Config struct{ User string } `json:"config"`
		}
		if err := json.Unmarshal([]byte(cfg), &ic); err != nil || ic.Config.User != "65532:65532" {
			t.Errorf("image config of %s: user %q (err %v), want 65532:65532", st.ImageID, ic.Config.User, err)
		}
		id := strings.TrimPrefix(st.ContainerID, "containerd://")
		pid := strings.TrimSpace(e.must(t, "ctr", "--address", e.sock, "-n", "k8s.io", "tasks", "ps", id))
		if uid := processUID(t, pid); uid != "65532" {
			t.Errorf("Pod %s: process runs as uid %q, want 65532", p.Name, uid)
		}
	}
}

// processUID returns the real uid of the first process `ctr tasks ps` lists.
func processUID(t *testing.T, ps string) string {
	t.Helper()
	lines := strings.Split(ps, "\n")
	if len(lines) < 2 {
		t.Fatalf("ctr tasks ps: %q", ps)
	}
	pid := strings.Fields(lines[1])[0]
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	return ""
}

func waitDeploymentReady(t *testing.T, e *env, n int32, timeout time.Duration) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := e.c.AppsV1().Deployments(releaseNS).Get(ctx, deployName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		st := d.Status
		last = fmt.Sprintf("%+v", st)
		return st.ObservedGeneration == d.Generation && st.ReadyReplicas == n && st.UpdatedReplicas == n &&
			st.Replicas == n && st.AvailableReplicas == n, nil
	})
	if err != nil {
		t.Fatalf("deployment %s not %d/%d ready: %v (last %s)", deployName, n, n, err, last)
	}
}

func webhookPods(t *testing.T, e *env) []corev1.Pod {
	t.Helper()
	l, err := e.c.CoreV1().Pods(releaseNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=dualstack-webhook"})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// releaseWebhooks returns the release's webhook configurations' client configs.
func releaseWebhooks(t *testing.T, e *env) map[string]admissionregistrationv1.WebhookClientConfig {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release}
	out := map[string]admissionregistrationv1.WebhookClientConfig{}
	m, err := e.c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Items {
		for _, w := range c.Webhooks {
			out["mutating/"+c.Name+"/"+w.Name] = w.ClientConfig
		}
	}
	v, err := e.c.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range v.Items {
		for _, w := range c.Webhooks {
			out["validating/"+c.Name+"/"+w.Name] = w.ClientConfig
		}
	}
	return out
}

// testRegisteredThroughService: every webhook keeps the chart's service:
// reference (no url:), carries a caBundle, and the apiserver reaches the Pods
// through that Service: a dry-run create of a Service is pinned and the
// invalid probe is denied by the webhook.
func testRegisteredThroughService(t *testing.T, e *env) {
	ws := releaseWebhooks(t, e)
	if len(ws) < 3 {
		t.Fatalf("%d webhooks registered, want the chart's (>= 3): %v", len(ws), ws)
	}
	for name, cc := range ws {
		if cc.URL != nil || cc.Service == nil {
			t.Errorf("%s: clientConfig %+v, want the chart's service: reference", name, cc)
			continue
		}
		if cc.Service.Namespace != releaseNS || cc.Service.Name != deployName {
			t.Errorf("%s: service %s/%s", name, cc.Service.Namespace, cc.Service.Name)
		}
		if len(cc.CABundle) == 0 {
			t.Errorf("%s: empty caBundle", name)
		}
	}
	ctx := context.Background()
	ns, err := framework.Namespace(ctx, e.c, "through-service", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitEffective(ctx, e.c, ns, "", 2*time.Minute); err != nil {
		t.Fatalf("the apiserver does not reach the webhook through its Service: %v", err)
	}
	// The Service's endpoints are the three Pods: that is where the calls went.
	eps, err := e.c.DiscoveryV1().EndpointSlices(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + deployName})
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready && ep.TargetRef != nil {
				ready[ep.TargetRef.Name] = true
			}
		}
	}
	if len(ready) != 3 {
		t.Errorf("ready endpoints of the Service: %v, want the 3 Pods", ready)
	}
	sv, err := e.c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pinned"},
		Spec: corev1.ServiceSpec{IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sv.Spec.ClusterIPs) != 2 {
		t.Fatalf("RequireDualStack Service got %v", sv.Spec.ClusterIPs)
	}
	waitReservation(t, e, map[string]string{sv.Spec.ClusterIPs[0]: ns + "/pinned", sv.Spec.ClusterIPs[1]: ns + "/pinned"})
	_ = e.c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

// reservationState returns the state label of ip's reservation ConfigMap
// ("" when there is none) and the Service it names.
func reservationState(ctx context.Context, e *env, ip string) (state, owner string, err error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "", "", err
	}
	cm, err := e.c.CoreV1().ConfigMaps(releaseNS).Get(ctx, configmap.Name(a), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	return cm.Labels[configmap.LabelState], cm.Data["namespace"] + "/" + cm.Data["name"], nil
}

// waitReservation: the webhook pinned the addresses, so its state namespace
// holds a bound reservation naming the Service for each (the apiserver alone
// would have allocated them without any).
func waitReservation(t *testing.T, e *env, owners map[string]string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for ip, want := range owners {
			state, owner, err := reservationState(ctx, e, ip)
			if err != nil || state != "bound" || owner != want {
				last = fmt.Sprintf("%s: state %q owner %q (want bound to %s) err %v", ip, state, owner, want, err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("reservations not bound: %s", last)
	}
}

// checkLoadReservations: every reservation of a load Service's address is
// bound to that Service (none names another, none stays pending), and the
// webhook pinned at least some of them. An address without a reservation is
// one the apiserver allocated dynamically (the webhook's pools can be full:
// the services suite leaves a small pool behind), which is not the webhook's.
func checkLoadReservations(t *testing.T, e *env, owners map[string]string) {
	t.Helper()
	var last string
	bound := 0
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		cms, err := e.c.CoreV1().ConfigMaps(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		bound = 0
		for _, cm := range cms.Items {
			want, ok := owners[cm.Data["ip"]]
			if !ok {
				continue
			}
			state, owner := cm.Labels[configmap.LabelState], cm.Data["namespace"]+"/"+cm.Data["name"]
			if state != "bound" || owner != want {
				last = fmt.Sprintf("%s: %q for %s, want bound to %s", cm.Data["ip"], state, owner, want)
				return false, nil
			}
			bound++
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("reservations of the load Services: %s", last)
	}
	if bound == 0 {
		t.Fatalf("none of the %d load addresses was pinned by the webhook", len(owners))
	}
	t.Logf("%d of %d load addresses pinned and bound; the rest allocated by the apiserver", bound, len(owners))
}

// testSelfBootstrapCertificate: the Pods minted the CA Secret and a serving
// certificate for the Service's DNS names, and wrote the CA into every
// registration.
func testSelfBootstrapCertificate(t *testing.T, e *env) {
	ctx := context.Background()
	secrets, err := e.c.CoreV1().Secrets(releaseNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var caPEM []byte
	var names []string
	for _, s := range secrets.Items {
		names = append(names, s.Name)
		if b, ok := s.Data["ca.crt"]; ok && caPEM == nil {
			caPEM = b
		}
	}
	if caPEM == nil {
		t.Fatalf("no bootstrap CA Secret (ca.crt) in %s: %v", releaseNS, names)
	}
	for name, cc := range releaseWebhooks(t, e) {
		if !bytes.Contains(cc.CABundle, bytes.TrimSpace(firstPEM(t, caPEM))) {
			t.Errorf("%s: caBundle does not carry the bootstrap CA", name)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	// The serving certificate lives only in the Pods' memory: fetch it the
	// way the apiserver does, through the Service's ClusterIP, from inside
	// the node's network namespace.
	sv, err := e.c.CoreV1().Services(releaseNS).Get(ctx, deployName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svcDNS := deployName + "." + releaseNS + ".svc"
	cmd := exec.Command("nsenter", "--net=/run/netns/dsw-node", "--", "openssl", "s_client",
		"-connect", net.JoinHostPort(sv.Spec.ClusterIP, "443"), "-servername", svcDNS)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TLS handshake with %s through the Service: %v\n%s", svcDNS, err, out)
	}
	i := bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----"))
	if i < 0 {
		t.Fatalf("no certificate from %s:\n%s", svcDNS, out)
	}
	leaf := parseCert(t, out[i:])
	// The name the apiserver checks when it calls through the Service.
	for _, dns := range []string{svcDNS} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: dns, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate for %s: %v (DNS names %v)", dns, err, leaf.DNSNames)
		}
	}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("not PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func firstPEM(t *testing.T, b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("not PEM")
	}
	return pem.EncodeToMemory(blk)
}

// seedTests are the services suite's tests run against the node by default:
// the four Services of the dual-stack validation pages, the legacy ipFamily
// review posted to the Service, the apiserver's own errors, the defaulting
// policies. E2E_NODE_SERVICES=all runs the whole suite (the differentials add
// about a minute).
const seedTests = "^(TestDocExamples|TestLegacyIPFamily|TestInvalidRejectedLikeTheAPIServer|TestDefaultPolicy)$"

// testServicesSuite runs today's services suite against the node, the way
// e2e/kind/run.sh runs it against kind.
func testServicesSuite(t *testing.T, e *env) {
	root, _ := framework.RepoRoot()
	args := []string{"test", "-count=1", "-timeout", "10m", "-v"}
	if os.Getenv("E2E_NODE_SERVICES") != "all" {
		args = append(args, "-run", seedTests)
	}
	cmd := exec.Command("go", append(args, "./services/")...)
	cmd.Dir = filepath.Join(root, "e2e")
	cmd.Env = append(os.Environ(), "E2E_USE_EXISTING_CLUSTER=true", "E2E_REQUIRED=1", "KUBECONFIG="+e.kubeconfig)
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(e.artifacts, "services-suite.log"), out, 0o644)
	if err != nil {
		t.Fatalf("services suite against the node: %v\n%s", err, tail(out, 60))
	}
	var passed []string
	subtests, skipped := 0, 0
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "--- PASS: Test") && !strings.Contains(l, "/"):
			passed = append(passed, strings.Fields(l)[2])
		case strings.HasPrefix(l, "--- PASS: "):
			subtests++
		case strings.HasPrefix(l, "--- SKIP: "):
			skipped++
		}
	}
	if len(passed) == 0 {
		t.Fatalf("the services suite ran no test:\n%s", tail(out, 20))
	}
	t.Logf("services suite: %s passed (%d subtests passed, %d skipped); %s", strings.Join(passed, ", "), subtests, skipped, lastLine(out))
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func lastLine(b []byte) string { return tail(b, 1) }

// load creates Services at a steady rate until stopped, counting failures.
type load struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	errs          []string
	created       []string
	stop          chan struct{}
	done          chan struct{}
}

func startLoad(t *testing.T, e *env, ns string) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			name := fmt.Sprintf("load-%04d", i)
			l.total.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := e.c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.ServiceSpec{IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
					Ports: []corev1.ServicePort{{Port: 80}}},
			}, metav1.CreateOptions{})
			cancel()
			l.mu.Lock()
			if err != nil {
				l.failed.Add(1)
				l.errs = append(l.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), name, err))
			} else {
				l.created = append(l.created, name)
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *load) end() {
	close(l.stop)
	<-l.done
}

func leaseHolder(t *testing.T, e *env) string {
	t.Helper()
	l, err := e.c.CoordinationV1().Leases(releaseNS).Get(context.Background(), leaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reconciler Lease: %v", err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// waitLeaseLive waits until the reconciler Lease is held by a live, Ready Pod.
func waitLeaseLive(t *testing.T, e *env, timeout time.Duration) string {
	t.Helper()
	var holder string
	var live []string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		holder = leaseHolder(t, e)
		live = live[:0]
		for _, p := range webhookPods(t, e) {
			if podReady(p) {
				live = append(live, p.Name)
				if strings.HasPrefix(holder, p.Name) {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("reconciler Lease held by %q, not by a live Pod of %v", holder, live)
	}
	return holder
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// testDisruptionUnderLoad: Service creates every 100ms while the Lease
// holder's Pod is deleted and then a rolling update (a changed argument)
// replaces every Pod. Not one create may fail; the Lease ends on a live Pod;
// no address is held twice; every created Service's addresses are reserved.
func testDisruptionUnderLoad(t *testing.T, e *env) {
	ctx := context.Background()
	ns, err := framework.Namespace(ctx, e.c, "load", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder := waitLeaseLive(t, e, time.Minute)
	l := startLoad(t, e, ns)
	time.Sleep(3 * time.Second)

	// 1. Delete the Pod holding the Lease.
	victim := ""
	for _, p := range webhookPods(t, e) {
		if strings.HasPrefix(holder, p.Name) {
			victim = p.Name
		}
	}
	if victim == "" {
		l.end()
		t.Fatalf("no Pod holds the Lease (%q)", holder)
	}
	before := map[string]bool{}
	for _, p := range webhookPods(t, e) {
		before[p.Name] = true
	}
	del := time.Now()
	if err := e.c.CoreV1().Pods(releaseNS).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
		l.end()
		t.Fatal(err)
	}
	var replacement string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range webhookPods(t, e) {
			if !before[p.Name] && podReady(p) {
				replacement = p.Name
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		l.end()
		t.Fatalf("no Ready replacement for %s: %v", victim, err)
	}
	e.figure(t, "Pod deleted -> replacement %s Ready (serving): %s", replacement, time.Since(del).Round(100*time.Millisecond))
	newHolder := waitLeaseLive(t, e, 2*time.Minute)
	if strings.HasPrefix(newHolder, victim) {
		t.Errorf("Lease still names the deleted Pod %s", victim)
	}

	// 2. Rolling update: a changed argument.
	up := time.Now()
	e.must(t, e.helm, append([]string{"upgrade", release, e.chart, "--reuse-values"},
		e.helmInstallArgs("--set", "config.extraArgs={--reconcile-interval=20s}")...)...)
	waitDeploymentReady(t, e, 3, 5*time.Minute)
	e.figure(t, "helm upgrade (rolling update) -> 3/3 new Pods Ready: %s", time.Since(up).Round(100*time.Millisecond))
	for _, p := range webhookPods(t, e) {
		if !strings.Contains(strings.Join(p.Spec.Containers[0].Args, " "), "--reconcile-interval=20s") {
			t.Errorf("Pod %s runs without the changed argument", p.Name)
		}
	}
	time.Sleep(3 * time.Second)
	l.end()
	e.figure(t, "Service creates during Pod deletion + rolling update: %d failed / %d total", l.failed.Load(), l.total.Load())
	if l.failed.Load() != 0 {
		t.Errorf("%d of %d creates failed:\n%s", l.failed.Load(), l.total.Load(), strings.Join(l.errs, "\n"))
	}
	if l.total.Load() < 50 {
		t.Errorf("only %d creates were attempted: the load did not span the disruption", l.total.Load())
	}
	final := waitLeaseLive(t, e, 2*time.Minute)
	t.Logf("Lease holder: %s -> %s -> %s", holder, newHolder, final)

	// 3. Addresses: none twice, every created one reserved by the webhook.
	svcs, err := e.c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	loadIPs := map[string]string{}
	for _, s := range svcs.Items {
		for _, ip := range s.Spec.ClusterIPs {
			if net.ParseIP(ip) == nil {
				continue
			}
			if prev, ok := seen[ip]; ok {
				t.Errorf("address %s held by %s and %s/%s", ip, prev, s.Namespace, s.Name)
			}
			seen[ip] = s.Namespace + "/" + s.Name
			if s.Namespace == ns {
				loadIPs[ip] = s.Namespace + "/" + s.Name
			}
		}
	}
	checkLoadReservations(t, e, loadIPs)
	// 4. No leak: delete the load Services; their reservations go (after
	// the reconciler's grace).
	for _, name := range l.created {
		_ = e.c.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		cms, err := e.c.CoreV1().ConfigMaps(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, cm := range cms.Items {
			if _, ok := loadIPs[cm.Data["ip"]]; ok && cm.Labels[configmap.LabelState] != "sticky" {
				last = fmt.Sprintf("%s: %q for %s/%s", cm.Data["ip"], cm.Labels[configmap.LabelState], cm.Data["namespace"], cm.Data["name"])
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("a reservation of a deleted load Service is still held after the grace: %s", last)
	}
}

// testSecretMode: certs.mode=secret with a Secret the user made (here: a CA
// and serving certificate for the Service's DNS names) — the Pods roll onto
// it and the apiserver trusts the given caBundle.
func testSecretMode(t *testing.T, e *env) {
	ctx := context.Background()
	dir := t.TempDir()
	svcDNS := deployName + "." + releaseNS + ".svc"
	sc, err := framework.NewServingCert(dir, nil, []string{svcDNS, svcDNS + ".cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	crt, _ := os.ReadFile(sc.CertFile)
	key, _ := os.ReadFile(sc.KeyFile)
	if _, err := e.c.CoreV1().Secrets(releaseNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "user-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": crt, "tls.key": key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.must(t, e.helm, append([]string{"upgrade", release, e.chart},
		e.helmInstallArgs("--set", "certs.mode=secret", "--set", "certs.secret.name=user-tls",
			"--set", "certs.secret.caBundle="+base64.StdEncoding.EncodeToString(sc.CAPEM))...)...)
	waitDeploymentReady(t, e, 3, 5*time.Minute)
	for name, cc := range releaseWebhooks(t, e) {
		if !bytes.Equal(bytes.TrimSpace(cc.CABundle), bytes.TrimSpace(sc.CAPEM)) {
			t.Errorf("%s: caBundle is not the given one", name)
		}
	}
	ns, err := framework.Namespace(ctx, e.c, "secret-mode", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitEffective(ctx, e.c, ns, "", 2*time.Minute); err != nil {
		t.Fatalf("webhook not effective with the user's Secret: %v", err)
	}
	_ = e.c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
}

// testUninstall: helm uninstall leaves no webhook configuration behind, and
// Service creates work again without the webhook.
func testUninstall(t *testing.T, e *env) {
	e.must(t, e.helm, "uninstall", release, "--namespace", releaseNS, "--wait", "--timeout", "3m")
	ctx := context.Background()
	m, err := e.c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.c.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Items {
		t.Errorf("mutating webhook configuration %s left behind", c.Name)
	}
	for _, c := range v.Items {
		t.Errorf("validating webhook configuration %s left behind", c.Name)
	}
	ns, err := framework.Namespace(ctx, e.c, "after-uninstall", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("Service create after uninstall: %v", err)
	}
}

// testCertManagerMode: the certManager mode renders and installs (with
// cert-manager's CRDs from the module this e2e module requires), but its Pods
// cannot become Ready here: cert-manager's controller is not available as a
// Go module binary, so nothing issues the Certificate and the Secret the Pods
// mount never appears. The test says so, proves the objects are in place, and
// uninstalls (a fail-closed webhook without backends would block Services).
func testCertManagerMode(t *testing.T, e *env) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locating the cert-manager module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	e.must(t, e.kubectl, "apply", "--server-side", "-f", crds)
	e.must(t, e.kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io")
	e.must(t, e.helm, "install", release, e.chart, "--namespace", releaseNS,
		"--set", "image.repository="+e.imageRepo, "--set", "image.tag="+e.imageTag, "--set", "image.pullPolicy=Never",
		"--set", "certs.mode=certManager", "--wait=false")
	defer e.must(t, e.helm, "uninstall", release, "--namespace", releaseNS, "--wait", "--timeout", "3m")
	got := e.must(t, e.kubectl, "get", "-n", releaseNS, "certificates.cert-manager.io,issuers.cert-manager.io", "-o", "name")
	if !strings.Contains(got, "certificate") || !strings.Contains(got, "issuer") {
		t.Fatalf("certManager mode installed no Certificate/Issuer:\n%s", got)
	}
	t.Logf("certManager mode: installed %s; NOT RUN here: cert-manager's controller (no Go-module build of it), so no Secret is issued and the Pods stay ContainerCreating", strings.Join(strings.Fields(got), ", "))
}
