package certse2e

import (
	"context"
	"os"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// suite runs its own control plane: fail-closed test webhooks pointing at
// loopback would be unreachable from a real cluster's apiserver.
var suite = &framework.Suite{
	Name:                 "certs e2e",
	NeedsOwnControlPlane: "the certs suite needs its own control plane",
	Options:              framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs},
}

func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }

func namespace(tb testing.TB, prefix string, labels map[string]string) string {
	tb.Helper()
	ns, err := framework.Namespace(context.Background(), suite.CP.Client, prefix, labels, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}
