package allocstore

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

var (
	cp        *framework.ControlPlane
	prereqErr error
	setupErr  error
	cidrs     = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
)

func TestMain(m *testing.M) {
	prereqErr = framework.Prereq()
	if prereqErr == nil && framework.UseExistingCluster() {
		prereqErr = fmt.Errorf("%w: allocstore needs its own control plane", framework.ErrPrereq)
	}
	if prereqErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cp, setupErr = framework.StartControlPlane(ctx, framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs})
		cancel()
	}
	code := m.Run()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "allocstore: stopping control plane:", err)
		}
	}
	os.Exit(code)
}

// need skips or fails (E2E_REQUIRED) when there is no control plane.
func need(tb testing.TB) {
	tb.Helper()
	framework.NeedPrereq(tb, prereqErr)
	if setupErr != nil {
		tb.Fatalf("control plane: %v", setupErr)
	}
}

// namespace makes a fresh namespace: every store of a test gets clean state.
func namespace(tb testing.TB, prefix string) string {
	tb.Helper()
	ns, err := framework.Namespace(context.Background(), cp.Client, prefix, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}

// newStore starts a ConfigMap store with its own clientset and informer, as
// a separate webhook replica would have.
func newStore(tb testing.TB, ns string) *configmap.Store {
	tb.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 0, 0 // start from client-go's defaults: NewForConfig must raise them
	s, err := configmap.NewForConfig(cfg, configmap.Options{Namespace: ns})
	if err != nil {
		tb.Fatal(err)
	}
	// Start's ctx is the informer's lifetime: the test's, not a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); s.Shutdown() })
	if err := s.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}

func compile(tb testing.TB, doc string) *alloc.Pools {
	tb.Helper()
	c, err := alloc.ParseConfig([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := alloc.Compile(c, cidrs)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
