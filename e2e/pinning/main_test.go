package pinning

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// The contract suite's webhook instance and its state namespace. Flags are
// short so that grace periods and reconciler passes fit in a test.
const (
	instPin  = "pin"
	pinState = "dsw-pin-state"
	// pendingGrace is --pending-grace of every webhook of this package.
	pendingGrace = 3 * time.Second
)

// pinFlags are the pinning flags of the contract instance (no pools
// ConfigMap: the default pool is the static band of each ServiceCIDR).
var pinFlags = []string{
	"--pending-grace", pendingGrace.String(),
	"--retention", "10m",
	"--reconcile-interval", "1s",
}

// shared is the control plane and webhook the contract tests share: started
// on first use (TestMain must not pay for it when only the benchmark or the
// pure checker tests run), torn down by TestMain.
type shared struct {
	once    sync.Once
	env     *framework.Env
	pin     *framework.Webhook
	err     error
	failed  bool
	cleanup []func()
}

var (
	sh        shared
	prereqErr error
)

func TestMain(m *testing.M) {
	prereqErr = framework.PrereqOwnControlPlane("the pinning suite runs its own control planes and webhook processes")
	code := m.Run()
	for i := len(sh.cleanup) - 1; i >= 0; i-- {
		sh.cleanup[i]()
	}
	if sh.env != nil {
		if err := sh.env.Close(code != 0 || sh.err != nil || sh.failed); err != nil {
			fmt.Fprintf(os.Stderr, "pinning: teardown: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// need returns the shared environment, starting it on first use; it skips
// (fails under E2E_REQUIRED) without binaries and fails when setup broke.
func need(t *testing.T) *framework.Env {
	t.Helper()
	framework.NeedPrereq(t, prereqErr)
	sh.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		sh.err = setupShared(ctx)
		if sh.err == nil {
			fmt.Fprintf(os.Stderr, "pinning: shared environment ready in %s\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if sh.err != nil {
		t.Fatalf("pinning environment setup failed: %v", sh.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			sh.failed = true
		}
	})
	return sh.env
}

func setupShared(ctx context.Context) error {
	env, err := framework.NewLocalEnv(ctx, "pinning", framework.ControlPlaneOptions{ServiceCIDRs: framework.DualStackCIDRs})
	if err != nil {
		return err
	}
	sh.env = env
	if err := framework.EnsureNamespace(ctx, env.Client, pinState, nil); err != nil {
		return err
	}
	w, _, err := env.StartWebhook(ctx, instPin, framework.WebhookOptions{
		ServiceCIDRs: framework.DualStackCIDRs,
		Namespace:    pinState,
		ExtraArgs:    pinFlags,
	})
	if err != nil {
		return fmt.Errorf("webhook %q: %w", instPin, err)
	}
	sh.pin = w
	return nil
}

// scoped creates a fresh namespace served by webhook instance inst.
func scoped(t *testing.T, c kubernetes.Interface, inst, prefix string) string {
	t.Helper()
	ns, err := framework.Namespace(context.Background(), c, prefix, map[string]string{framework.ScopeLabel: inst}, nil)
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns
}

// newService is the seed documents' Service (selector app=MyApp, TCP 80) with
// mutations applied.
func newService(name string, mut ...func(*corev1.Service)) *corev1.Service {
	return framework.NewService(name, map[string]string{"app": "MyApp"}, mut...)
}

func withLabel(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Labels[k] = v }
}

// Families.
const (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol
)

// Static bands of framework.DualStackCIDRs (docs/dualstack-rules.md §5.2).
var (
	cidr4  = netip.MustParsePrefix("10.96.0.0/16")
	cidr6  = netip.MustParsePrefix("fd00:10:96::/108")
	band4  = addrRange{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.1.0")}
	band6  = addrRange{netip.MustParseAddr("fd00:10:96::1"), netip.MustParseAddr("fd00:10:96::100")}
	bandOf = map[corev1.IPFamily]addrRange{v4: band4, v6: band6}
)

// addrRange is an inclusive range of addresses.
type addrRange struct{ first, last netip.Addr }

func (r addrRange) contains(a netip.Addr) bool {
	return a.IsValid() && a.BitLen() == r.first.BitLen() && r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0
}

func (r addrRange) String() string { return r.first.String() + "-" + r.last.String() }

// held returns every address some object holds: IPAddress objects (what the
// apiserver allocated) and reservation ConfigMaps in stateNS (what the
// webhook reserved, including pending and sticky ones).
func held(ctx context.Context, t *testing.T, c kubernetes.Interface, stateNS string) map[netip.Addr]string {
	t.Helper()
	out := map[netip.Addr]string{}
	ips, err := c.NetworkingV1().IPAddresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list IPAddresses: %v", err)
	}
	for _, ip := range ips.Items {
		if a, err := netip.ParseAddr(ip.Name); err == nil {
			out[a] = "IPAddress"
		}
	}
	res, err := framework.Reservations(ctx, c, stateNS)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		out[r.IP] = "reservation " + r.String()
	}
	return out
}

// lowestFree is the address the webhook's default strategy must hand out
// next in family f: the lowest of the static band nobody holds.
func lowestFree(ctx context.Context, t *testing.T, c kubernetes.Interface, stateNS string, f corev1.IPFamily) netip.Addr {
	t.Helper()
	taken := held(ctx, t, c, stateNS)
	band := bandOf[f]
	for a := band.first; band.contains(a); a = a.Next() {
		if _, ok := taken[a]; !ok {
			return a
		}
	}
	t.Fatalf("static band %s is full", band)
	return netip.Addr{}
}

// reservationOf returns the reservation of ip, if any.
func reservationOf(ctx context.Context, t *testing.T, c kubernetes.Interface, stateNS string, ip netip.Addr) (framework.Reservation, bool) {
	t.Helper()
	r, ok, err := framework.ReservationOf(ctx, c, stateNS, ip)
	if err != nil {
		t.Fatal(err)
	}
	return r, ok
}

// waitBound waits until ip's reservation is bound to ns/name (the reconciler
// saw the Service).
func waitBound(t *testing.T, c kubernetes.Interface, stateNS string, ip netip.Addr, ns, name string) {
	t.Helper()
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("reservation of %s bound to %s/%s", ip, ns, name), func(ctx context.Context) (bool, string) {
		r, ok := reservationOf(ctx, t, c, stateNS, ip)
		if !ok {
			return false, "no ConfigMap " + configmap.Name(ip)
		}
		return r.State == "bound" && r.Namespace == ns && r.Name == name, r.String()
	})
}

// addrs parses a Service's clusterIPs.
func addrs(t *testing.T, sv *corev1.Service) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range sv.Spec.ClusterIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			t.Fatalf("%s/%s: clusterIPs %v: %v", sv.Namespace, sv.Name, sv.Spec.ClusterIPs, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 || sv.Spec.ClusterIP != sv.Spec.ClusterIPs[0] {
		t.Fatalf("%s/%s: clusterIP %q, clusterIPs %v: want clusterIP == clusterIPs[0]", sv.Namespace, sv.Name, sv.Spec.ClusterIP, sv.Spec.ClusterIPs)
	}
	return out
}

// errText is err's message, or "<nil>".
func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// wantDenied fails unless err is an API error whose message contains every
// one of parts.
func wantDenied(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: admitted, want denied with %q", what, parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not contain %q", what, err, p)
		}
	}
}
