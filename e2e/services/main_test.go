package services

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// Webhook instances of the local suite. Each serves the namespaces labelled
// framework.ScopeLabel=<instance>.
const (
	// instDefault runs with --service-cidrs and no default policy: it must
	// behave exactly like the apiserver.
	instDefault = "default"
	// instPreferDual runs with --default-ip-family-policy PreferDualStack and
	// without --service-cidrs (the families come from the ServiceCIDR objects).
	instPreferDual = "prefer-dual"
	// stateNamespace is where the webhook keeps its state ConfigMaps.
	stateNamespace = "dualstack-webhook-system"
)

// suite is the state shared by the tests of this package, set up once by
// TestMain (a control plane start costs seconds; every test reuses it).
type suite struct {
	env      *framework.Env
	webhooks map[string]*framework.Webhook
}

var (
	s         suite
	prereqErr error // nil when the suite can run here
	setupErr  error // set when the environment could not be brought up
)

func TestMain(m *testing.M) {
	prereqErr = framework.Prereq()
	if prereqErr != nil {
		// Every test skips (or fails under E2E_REQUIRED) with the reason.
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	start := time.Now()
	setupErr = setup(ctx)
	cancel()
	if setupErr == nil {
		fmt.Fprintf(os.Stderr, "e2e: environment ready in %s (existing cluster: %v, service CIDRs %v)\n",
			time.Since(start).Round(time.Millisecond), s.env.Existing, s.env.ServiceCIDRs)
	}
	code := m.Run()
	if s.env != nil {
		if err := s.env.Close(code != 0 || setupErr != nil); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: teardown: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func setup(ctx context.Context) error {
	env, err := framework.NewEnv(ctx, "services", framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs})
	if err != nil {
		return err
	}
	s.env = env
	s.webhooks = map[string]*framework.Webhook{}
	if env.Existing {
		// The chart installed the webhook; wait until the apiserver calls it
		// for an ordinary namespace (a fresh install may still be loading).
		ns, err := framework.Namespace(ctx, env.Client, "probe", nil, nil)
		if err != nil {
			return err
		}
		defer func() {
			_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		}()
		return framework.WaitEffective(ctx, env.Client, ns, "", 2*time.Minute)
	}
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stateNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, inst := range []struct {
		name string
		opts framework.WebhookOptions
	}{
		{instDefault, framework.WebhookOptions{ServiceCIDRs: framework.DualStackCIDRs, Namespace: stateNamespace}},
		{instPreferDual, framework.WebhookOptions{Namespace: stateNamespace, DefaultIPFamilyPolicy: "PreferDualStack"}},
	} {
		w, _, err := env.StartWebhook(ctx, inst.name, inst.opts)
		if err != nil {
			return fmt.Errorf("webhook instance %q: %w", inst.name, err)
		}
		s.webhooks[inst.name] = w
	}
	return nil
}

// need returns the environment or ends the test: skip when the binaries are
// missing (fail under E2E_REQUIRED), fail when setup broke.
func need(t *testing.T) *framework.Env {
	t.Helper()
	framework.NeedPrereq(t, prereqErr)
	if setupErr != nil {
		t.Fatalf("e2e environment setup failed: %v", setupErr)
	}
	return s.env
}

// needLocal is need for tests that drive a webhook process directly.
func needLocal(t *testing.T) *framework.Env {
	t.Helper()
	env := need(t)
	if env.Existing {
		t.Skip("needs a webhook host process started by the suite (local control plane only)")
	}
	return env
}

// nsKind says which admission path a test namespace gets.
type nsKind int

const (
	// withWebhook: served by the webhook (local: instance "default"; existing
	// cluster: any namespace the chart does not exclude).
	withWebhook nsKind = iota
	// withoutWebhook: the apiserver alone (existing cluster: the Namespace
	// carries the skip label).
	withoutWebhook
	// preferDual: served by the --default-ip-family-policy PreferDualStack instance.
	preferDual
)

// newNamespace creates a namespace of the given kind with extra labels and
// annotations; on an existing cluster it is deleted at the end of the test.
func newNamespace(t *testing.T, kind nsKind, prefix string, labels, annotations map[string]string) string {
	t.Helper()
	env := need(t)
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	switch kind {
	case withWebhook:
		if !env.Existing {
			l[framework.ScopeLabel] = instDefault
		}
	case withoutWebhook:
		if env.Existing {
			l[framework.SkipLabel] = "true"
		}
	case preferDual:
		if env.Existing {
			t.Skip("needs a webhook started with --default-ip-family-policy (local control plane only)")
		}
		l[framework.ScopeLabel] = instPreferDual
	}
	ctx := context.Background()
	ns, err := framework.Namespace(ctx, env.Client, prefix, l, annotations)
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	if env.Existing {
		t.Cleanup(func() {
			_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	return ns
}

func client(t *testing.T) kubernetes.Interface { return need(t).Client }

// families of the cluster, primary first.
func clusterFamilies(t *testing.T) []corev1.IPFamily {
	var out []corev1.IPFamily
	for _, p := range need(t).ServiceCIDRs {
		out = append(out, familyOfPrefix(p))
	}
	return out
}

func familyOfPrefix(p netip.Prefix) corev1.IPFamily {
	if p.Addr().Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

func needDualStack(t *testing.T) {
	t.Helper()
	if len(clusterFamilies(t)) < 2 {
		t.Skipf("needs a dual-stack cluster; this one has %v", need(t).ServiceCIDRs)
	}
}

// cidrOf returns the cluster's range of family f.
func cidrOf(t *testing.T, f corev1.IPFamily) (netip.Prefix, bool) {
	for _, p := range need(t).ServiceCIDRs {
		if familyOfPrefix(p) == f {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// pinnedIP returns a distinct address of family f inside the cluster's range,
// in the upper half (clear of the static band the webhook allocates from and
// of the apiserver's dynamic picks being likely to collide). f's range must exist.
func pinnedIP(t *testing.T, f corev1.IPFamily, n uint64) string {
	t.Helper()
	p, ok := cidrOf(t, f)
	if !ok {
		// A family the cluster lacks: any well-formed address will do, the
		// apiserver rejects it for its family.
		if f == corev1.IPv4Protocol {
			p = netip.MustParsePrefix("10.255.0.0/16")
		} else {
			p = netip.MustParsePrefix("fd00:ffff::/112")
		}
	}
	size := uint64(1) << min(uint(p.Addr().BitLen()-p.Bits()), 62)
	a, err := framework.IPAt(p, size/2+n%(size/2-1)+1)
	if err != nil {
		t.Fatalf("pinned IP: %v", err)
	}
	return a.String()
}

func svc(name string, mut ...func(*corev1.Service)) *corev1.Service {
	return framework.NewService(name, nil, mut...)
}

func create(t *testing.T, ns string, sv *corev1.Service) (*corev1.Service, error) {
	t.Helper()
	return client(t).CoreV1().Services(ns).Create(context.Background(), sv, metav1.CreateOptions{})
}

func mustCreate(t *testing.T, ns string, sv *corev1.Service) *corev1.Service {
	t.Helper()
	got, err := create(t, ns, sv)
	if err != nil {
		t.Fatalf("create %s/%s: %v", ns, sv.Name, err)
	}
	return got
}

// get reads a Service back from the API (not the create response), so the
// assertions are about what is stored.
func get(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	got, err := client(t).CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return got
}
