package allocstore

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

var (
	suite = &framework.Suite{
		Name:                 "allocstore",
		NeedsOwnControlPlane: "allocstore needs its own control plane",
		Options:              framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs},
	}
	cidrs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
)

func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }

// namespace makes a fresh namespace: every store of a test gets clean state.
func namespace(tb testing.TB, prefix string) string {
	tb.Helper()
	ns, err := framework.Namespace(context.Background(), suite.CP.Client, prefix, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}

// newStore starts a ConfigMap store with its own clientset and informer, as
// a separate webhook replica would have.
func newStore(tb testing.TB, ns string) *configmap.Store {
	tb.Helper()
	return newStoreWith(tb, configmap.Options{Namespace: ns})
}

// newStoreWith is newStore with opts (Namespace included).
func newStoreWith(tb testing.TB, opts configmap.Options) *configmap.Store {
	tb.Helper()
	cfg := rest.CopyConfig(suite.CP.Config)
	cfg.QPS, cfg.Burst = 0, 0 // start from client-go's defaults: NewForConfig must raise them
	s, err := configmap.NewForConfig(cfg, opts)
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
