package certse2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

var (
	cp        *framework.ControlPlane
	prereqErr error
	setupErr  error
)

func TestMain(m *testing.M) {
	prereqErr = framework.Prereq()
	if prereqErr == nil && framework.UseExistingCluster() {
		// Fail-closed test webhooks pointing at loopback would be
		// unreachable from a real cluster's apiserver.
		prereqErr = fmt.Errorf("%w: the certs suite needs its own control plane", framework.ErrPrereq)
	}
	if prereqErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cp, setupErr = framework.StartControlPlane(ctx, framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs})
		cancel()
	}
	code := m.Run()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "certs e2e: stopping control plane:", err)
		}
	}
	os.Exit(code)
}

// need skips, or fails under E2E_REQUIRED, when there is no control plane.
func need(tb testing.TB) {
	tb.Helper()
	framework.NeedPrereq(tb, prereqErr)
	if setupErr != nil {
		tb.Fatalf("control plane: %v", setupErr)
	}
}

func namespace(tb testing.TB, prefix string, labels map[string]string) string {
	tb.Helper()
	ns, err := framework.Namespace(context.Background(), cp.Client, prefix, labels, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}
