package pinning

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/grid"
)

// TestSeedExamples creates the Services of the Kubernetes documentation's
// dual-stack pages ("IPv4/IPv6 dual-stack", "Validate IPv4/IPv6 dual-stack":
// no policy, ipFamilies IPv6, PreferDualStack, a PreferDualStack LoadBalancer
// IPv6 first) through the pinning webhook: each
// comes back with the policy and families the pages show and with addresses
// from the static band, the lowest free one of each family first, and the
// reconciler binds every reservation to its Service.
func TestSeedExamples(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	cases := []struct {
		name     string
		svc      *corev1.Service
		policy   corev1.IPFamilyPolicy
		families []corev1.IPFamily
	}{
		{"no policy", newService("my-service"), corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{v4}},
		{"ipFamilies IPv6", newService("my-service", framework.WithFamilies(v6)), corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{v6}},
		{"PreferDualStack", newService("my-service", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)),
			corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{v4, v6}},
		{"LoadBalancer PreferDualStack IPv6 first", newService("my-service", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack),
			framework.WithFamilies(v6), func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }),
			corev1.IPFamilyPolicyPreferDualStack, []corev1.IPFamily{v6, v4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := scoped(t, c, instPin, "seed")
			var want []netip.Addr
			for _, f := range tc.families {
				want = append(want, lowestFree(ctx, t, c, pinState, f))
			}
			if _, err := c.CoreV1().Services(ns).Create(ctx, tc.svc, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create: %v", err)
			}
			got, err := c.CoreV1().Services(ns).Get(ctx, tc.svc.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.IPFamilyPolicy == nil || *got.Spec.IPFamilyPolicy != tc.policy || !slices.Equal(got.Spec.IPFamilies, tc.families) {
				t.Errorf("stored policy %v families %v, want %s %v", deref(got.Spec.IPFamilyPolicy), got.Spec.IPFamilies, tc.policy, tc.families)
			}
			ips := addrs(t, got)
			t.Logf("%s/%s: clusterIPs %v (lowest free was %v)", ns, got.Name, ips, want)
			if !slices.Equal(ips, want) {
				t.Fatalf("clusterIPs %v, want the lowest free static-band addresses %v", ips, want)
			}
			for _, ip := range ips {
				waitBound(t, c, pinState, ip, ns, got.Name)
			}
		})
	}
}

// TestRequestedAddresses: a Service that brings its own address inside the
// pool keeps it and holds it; another Service asking for it is denied with
// the holder's name (dry run too); an address outside every ServiceCIDR gets
// the apiserver's own message and no reservation; an address inside the
// ServiceCIDR but outside every pool is admitted as the apiserver would.
func TestRequestedAddresses(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "byhand")
	other := scoped(t, c, instPin, "thief")
	for _, f := range []corev1.IPFamily{v4, v6} {
		t.Run(string(f), func(t *testing.T) {
			h := highestFree(ctx, t, c, pinState, f)
			name := "byhand-" + lower(f)
			got, err := c.CoreV1().Services(ns).Create(ctx, newService(name, framework.WithFamilies(f), framework.WithClusterIPs(h.String())), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create %s asking for free static-band %s: %v", name, h, err)
			}
			if ips := addrs(t, got); !slices.Equal(ips, []netip.Addr{h}) {
				t.Fatalf("clusterIPs %v, want the requested [%s]", ips, h)
			}
			waitBound(t, c, pinState, h, ns, name)

			holder := "held by " + ns + "/" + name
			thief := newService("thief-"+lower(f), framework.WithFamilies(f), framework.WithClusterIPs(h.String()))
			_, err = c.CoreV1().Services(other).Create(ctx, thief, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			wantDenied(t, "dry-run create asking for a held address", err, holder)
			_, err = c.CoreV1().Services(other).Create(ctx, thief, metav1.CreateOptions{})
			wantDenied(t, "create asking for a held address", err, holder)
			if r, ok := reservationOf(ctx, t, c, pinState, h); !ok || r.Owner() != ns+"/"+name {
				t.Errorf("after the denials the reservation of %s is %v (present %v), want it still %s/%s's", h, r, ok, ns, name)
			}
		})
	}
	t.Run("outside every ServiceCIDR", func(t *testing.T) {
		for _, ip := range []string{"10.97.0.5", "fd00:10:97::5"} {
			a := netip.MustParseAddr(ip)
			_, err := c.CoreV1().Services(ns).Create(ctx, newService("outside-"+lower(familyOf(a)), framework.WithFamilies(familyOf(a)), framework.WithClusterIPs(ip)), metav1.CreateOptions{})
			wantDenied(t, "create asking for "+ip, err, "failed to allocate IP "+ip+": the provided network does not match the current range")
			if r, ok := reservationOf(ctx, t, c, pinState, a); ok {
				t.Errorf("a reservation exists for the refused %s: %v", ip, r)
			}
		}
	})
	t.Run("inside the ServiceCIDR outside every pool", func(t *testing.T) {
		ip := "10.96.200.7"
		got, err := c.CoreV1().Services(ns).Create(ctx, newService("unpooled", framework.WithClusterIPs(ip)), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create asking for free %s (the apiserver accepts it): %v", ip, err)
		}
		if got.Spec.ClusterIP != ip {
			t.Errorf("clusterIP %s, want %s", got.Spec.ClusterIP, ip)
		}
	})
}

// TestDryRun: a dry-run create answers the addresses the real create then
// gets, and writes nothing (no Service, no reservation ConfigMap).
func TestDryRun(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "dryrun")
	want := []netip.Addr{lowestFree(ctx, t, c, pinState, v4), lowestFree(ctx, t, c, pinState, v6)}
	before, err := framework.Reservations(ctx, c, pinState)
	if err != nil {
		t.Fatal(err)
	}
	sv := newService("dry", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack))
	ans, err := c.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("dry-run create: %v", err)
	}
	if ips := addrs(t, ans); !slices.Equal(ips, want) {
		t.Errorf("dry-run answered clusterIPs %v, want the lowest free %v", ips, want)
	}
	// Give a misbehaving webhook's asynchronous write time to land.
	time.Sleep(1500 * time.Millisecond)
	if _, err := c.CoreV1().Services(ns).Get(ctx, "dry", metav1.GetOptions{}); err == nil {
		t.Errorf("the dry-run Service was stored")
	}
	for _, ip := range want {
		if r, ok := reservationOf(ctx, t, c, pinState, ip); ok {
			t.Errorf("dry run left ConfigMap %s", r)
		}
	}
	after, err := framework.Reservations(ctx, c, pinState)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after {
		if r.Namespace == ns {
			t.Errorf("dry run left a reservation for its namespace: %s", r)
		}
	}
	t.Logf("reservation ConfigMaps: %d before, %d after the dry run", len(before), len(after))

	got, err := c.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("real create after the dry run: %v", err)
	}
	if ips := addrs(t, got); !slices.Equal(ips, want) {
		t.Errorf("real create got %v, dry run answered %v: not the same answer", ips, want)
	}
	_, err = c.CoreV1().Services(ns).Create(ctx, newService("dry-thief", framework.WithClusterIPs(want[0].String())), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	wantDenied(t, "dry-run create asking for the now-held "+want[0].String(), err, "held by "+ns+"/dry")
}

// TestGenerateName: a Service with only generateName is pinned, and once the
// reconciler has seen it its reservations carry the generated name.
func TestGenerateName(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "genname")
	want := []netip.Addr{lowestFree(ctx, t, c, pinState, v4), lowestFree(ctx, t, c, pinState, v6)}
	sv := newService("", framework.WithPolicy(corev1.IPFamilyPolicyRequireDualStack))
	sv.GenerateName = "gen-"
	got, err := c.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create generateName Service: %v", err)
	}
	ips := addrs(t, got)
	if !slices.Equal(ips, want) {
		t.Errorf("%s/%s: clusterIPs %v, want the lowest free %v", ns, got.Name, ips, want)
	}
	for _, ip := range ips {
		waitBound(t, c, pinState, ip, ns, got.Name)
	}
}

// TestRejectedByLaterWebhook: the pinning webhook reserves at admission, a
// later validating webhook denies the Service; the pending reservation is
// freed once --pending-grace has passed, and the address is handed out again.
func TestRejectedByLaterWebhook(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "later")
	deny := startDenyWebhook(t, c, "later-pin", instPin)

	want := lowestFree(ctx, t, c, pinState, v4)
	start := time.Now()
	_, err := c.CoreV1().Services(ns).Create(ctx, newService("doomed", withLabel(denyLabel, "true")), metav1.CreateOptions{})
	wantDenied(t, "create of a Service the later webhook denies", err, deny.message)
	if deny.calls() == 0 {
		t.Fatalf("the later webhook was never called")
	}
	r, ok := reservationOf(ctx, t, c, pinState, want)
	if !ok || r.Owner() != ns+"/doomed" {
		t.Fatalf("right after the denial the reservation of %s is %v (present %v): want it pending for %s/doomed (the pinning webhook cannot know a later webhook's verdict, so it must have reserved)",
			want, r, ok, ns)
	}
	t.Logf("pending reservation left by the denied create: %s", r)
	framework.Eventually(t, pendingGrace+30*time.Second, fmt.Sprintf("no reservation left for %s/doomed (grace %s)", ns, pendingGrace), func(ctx context.Context) (bool, string) {
		res, err := framework.Reservations(ctx, c, pinState)
		if err != nil {
			return false, err.Error()
		}
		for _, r := range res {
			if r.Namespace == ns {
				return false, r.String()
			}
		}
		return true, ""
	})
	if since := time.Since(start); since < pendingGrace {
		t.Errorf("the pending reservation was freed %s after the create, before the grace period %s", since, pendingGrace)
	}
	got, err := c.CoreV1().Services(ns).Create(ctx, newService("next"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ClusterIP != want.String() {
		t.Errorf("the next Service got %s, want the freed %s back (lowest free)", got.Spec.ClusterIP, want)
	}
}

// TestStickyRecreate: a deleted Service's address stays reserved to its name
// (another Service does not get it) and comes back when the name is re-created.
func TestStickyRecreate(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "sticky")
	first, err := c.CoreV1().Services(ns).Create(ctx, newService("sticky", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ips := addrs(t, first)
	for _, ip := range ips {
		if !bandOf[familyOf(ip)].contains(ip) {
			t.Errorf("%s is outside the static band %s", ip, bandOf[familyOf(ip)])
		}
		waitBound(t, c, pinState, ip, ns, "sticky")
	}
	if err := c.CoreV1().Services(ns).Delete(ctx, "sticky", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		framework.Eventually(t, 30*time.Second, fmt.Sprintf("reservation of %s sticky to %s/sticky after the delete", ip, ns), func(ctx context.Context) (bool, string) {
			r, ok := reservationOf(ctx, t, c, pinState, ip)
			if !ok {
				return false, "no ConfigMap " + configmap.Name(ip) + " (freed instead of kept sticky?)"
			}
			return r.State == "sticky" && r.Owner() == ns+"/sticky", r.String()
		})
	}
	other, err := c.CoreV1().Services(ns).Create(ctx, newService("other", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range addrs(t, other) {
		if slices.Contains(ips, ip) {
			t.Errorf("another Service got %s, sticky to %s/sticky", ip, ns)
		}
	}
	again, err := c.CoreV1().Services(ns).Create(ctx, newService("sticky", framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("re-create: %v", err)
	}
	if got := addrs(t, again); !slices.Equal(got, ips) {
		t.Errorf("re-created Service got %v, want its sticky %v", got, ips)
	}
	for _, ip := range ips {
		waitBound(t, c, pinState, ip, ns, "sticky")
	}
}

// TestUpgradeDowngrade: single → dual through the API pins only the
// secondary (the lowest free static-band address of the other family, the
// primary untouched); dual → single releases the secondary once the
// reconciler has seen the change.
func TestUpgradeDowngrade(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "updown")
	for _, order := range [][]corev1.IPFamily{{v4, v6}, {v6, v4}} {
		name := "updown-" + lower(order[0])
		t.Run(name, func(t *testing.T) {
			created, err := c.CoreV1().Services(ns).Create(ctx, newService(name,
				framework.WithPolicy(corev1.IPFamilyPolicySingleStack), framework.WithFamilies(order[0])), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			primary := addrs(t, created)[0]
			waitBound(t, c, pinState, primary, ns, name)

			want2 := lowestFree(ctx, t, c, pinState, order[1])
			up := update(t, c, ns, name, func(s *corev1.Service) {
				s.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyPreferDualStack)
			})
			if got := addrs(t, up); !slices.Equal(got, []netip.Addr{primary, want2}) {
				t.Fatalf("after the upgrade clusterIPs %v, want [%s %s] (primary kept, secondary the lowest free)", got, primary, want2)
			}
			waitBound(t, c, pinState, want2, ns, name)

			down := update(t, c, ns, name, func(s *corev1.Service) {
				s.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicySingleStack)
				s.Spec.IPFamilies = s.Spec.IPFamilies[:1]
				s.Spec.ClusterIPs = s.Spec.ClusterIPs[:1]
			})
			if got := addrs(t, down); !slices.Equal(got, []netip.Addr{primary}) {
				t.Fatalf("after the downgrade clusterIPs %v, want [%s]", got, primary)
			}
			framework.Eventually(t, 30*time.Second, fmt.Sprintf("secondary %s released after the downgrade", want2), func(ctx context.Context) (bool, string) {
				r, ok := reservationOf(ctx, t, c, pinState, want2)
				if !ok {
					return true, "freed"
				}
				return r.State == "sticky", r.String()
			})
			if r, ok := reservationOf(ctx, t, c, pinState, primary); !ok || r.State != "bound" || r.Owner() != ns+"/"+name {
				t.Errorf("primary %s after the downgrade: %v (present %v), want still bound to %s/%s", primary, r, ok, ns, name)
			}
		})
	}
}

// update reads a Service, applies mut and writes it back (retrying on
// Conflict), returning what the API stored.
func update(t *testing.T, c kubernetes.Interface, ns, name string, mut func(*corev1.Service)) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	var lastErr error
	for range 5 {
		sv, err := c.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mut(sv)
		got, err := c.CoreV1().Services(ns).Update(ctx, sv, metav1.UpdateOptions{})
		if err == nil {
			return got
		}
		lastErr = err
		if !isConflict(err) {
			break
		}
	}
	t.Fatalf("update %s/%s: %v", ns, name, lastErr)
	return nil
}

// highestFree is the highest static-band address of family f nobody holds.
func highestFree(ctx context.Context, t *testing.T, c kubernetes.Interface, stateNS string, f corev1.IPFamily) netip.Addr {
	t.Helper()
	taken := held(ctx, t, c, stateNS)
	band := bandOf[f]
	for a := band.last; band.contains(a); a = a.Prev() {
		if _, ok := taken[a]; !ok {
			return a
		}
	}
	t.Fatalf("static band %s is full", band)
	return netip.Addr{}
}

func familyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return v4
	}
	return v6
}

func lower(f corev1.IPFamily) string {
	if f == v4 {
		return "v4"
	}
	return "v6"
}

func deref[T any](p *T) any {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func ptrTo[T any](v T) *T { return &v }

// TestForeignPinsAndExclusions: a Service the webhook never saw (its
// namespace is outside the webhook's scope) that asks for a static-band
// address is imported by the reconciler, so the webhook neither hands that
// address out nor lets another Service request it; headless and
// ExternalName Services get no pin and no reservation.
func TestForeignPinsAndExclusions(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	foreignNS, err := framework.Namespace(ctx, c, "unscoped", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := scoped(t, c, instPin, "foreign")
	ip := lowestFree(ctx, t, c, pinState, v4)
	if _, err := c.CoreV1().Services(foreignNS).Create(ctx, newService("foreign", framework.WithClusterIPs(ip.String())), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s/foreign with %s (no webhook): %v", foreignNS, ip, err)
	}
	waitBound(t, c, pinState, ip, foreignNS, "foreign")
	got, err := c.CoreV1().Services(ns).Create(ctx, newService("next"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ClusterIP == ip.String() {
		t.Errorf("the webhook handed out %s, held by the imported %s/foreign", ip, foreignNS)
	}
	_, err = c.CoreV1().Services(ns).Create(ctx, newService("thief", framework.WithClusterIPs(ip.String())), metav1.CreateOptions{})
	wantDenied(t, "create asking for the imported "+ip.String(), err, "held by "+foreignNS+"/foreign")

	before, err := framework.Reservations(ctx, c, pinState)
	if err != nil {
		t.Fatal(err)
	}
	headless, err := c.CoreV1().Services(ns).Create(ctx, newService("headless", framework.WithClusterIPs(corev1.ClusterIPNone),
		framework.WithPolicy(corev1.IPFamilyPolicyPreferDualStack)), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create headless: %v", err)
	}
	if !slices.Equal(headless.Spec.ClusterIPs, []string{corev1.ClusterIPNone}) {
		t.Errorf("headless Service got clusterIPs %v, want [None]", headless.Spec.ClusterIPs)
	}
	ext, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "external"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ExternalName: %v", err)
	}
	if len(ext.Spec.ClusterIPs) != 0 || ext.Spec.ClusterIP != "" {
		t.Errorf("ExternalName Service got clusterIP %q clusterIPs %v, want none", ext.Spec.ClusterIP, ext.Spec.ClusterIPs)
	}
	time.Sleep(1500 * time.Millisecond) // a reconciler pass
	after, err := framework.Reservations(ctx, c, pinState)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after {
		if r.Namespace == ns && (r.Name == "headless" || r.Name == "external") {
			t.Errorf("reservation for a Service that must not be pinned: %s", r)
		}
	}
	t.Logf("reservations: %d before the headless and ExternalName creates, %d after", len(before), len(after))
}

// TestExternalNameTransitions: a ClusterIP Service turned ExternalName gives
// its addresses back once the reconciler sees it; an ExternalName Service
// turned ClusterIP is pinned like a create (the lowest free address).
func TestExternalNameTransitions(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "extname")
	created, err := c.CoreV1().Services(ns).Create(ctx, newService("to-ext"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := addrs(t, created)[0]
	waitBound(t, c, pinState, ip, ns, "to-ext")
	update(t, c, ns, "to-ext", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeExternalName
		s.Spec.ExternalName = "example.com"
		s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies, s.Spec.IPFamilyPolicy = "", nil, nil, nil
	})
	framework.Eventually(t, 30*time.Second, fmt.Sprintf("%s released after the change to ExternalName", ip), func(ctx context.Context) (bool, string) {
		r, ok := reservationOf(ctx, t, c, pinState, ip)
		if !ok {
			return true, "freed"
		}
		return r.State == "sticky", r.String()
	})

	if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "from-ext"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := lowestFree(ctx, t, c, pinState, v4)
	got := update(t, c, ns, "from-ext", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Spec.ExternalName = ""
		s.Spec.Selector = map[string]string{"app": "MyApp"}
		s.Spec.Ports = []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}
	})
	if ips := addrs(t, got); !slices.Equal(ips, []netip.Addr{want}) {
		t.Fatalf("ExternalName → ClusterIP got %v, want the lowest free [%s]", ips, want)
	}
	waitBound(t, c, pinState, want, ns, "from-ext")
}

// TestRecreateUpgradeLoop: the same name created single-stack (its own
// primary, outside the pool), upgraded to dual-stack (the webhook pins the
// secondary) and deleted, again and again without pause — what the update
// differential of the services suite does. Every upgrade must be admitted:
// the apiserver alone would have allocated a secondary, so an "already
// allocated" here is the webhook handing out an address it must not.
func TestRecreateUpgradeLoop(t *testing.T) {
	env := need(t)
	c := env.Client
	ctx := context.Background()
	ns := scoped(t, c, instPin, "reloop")
	svcs := c.CoreV1().Services(ns)
	var secondaries []string
	for i := range 20 {
		primary := fmt.Sprintf("10.96.210.%d", i+1)
		created, err := svcs.Create(ctx, newService("grid", framework.WithPolicy(corev1.IPFamilyPolicySingleStack), framework.WithClusterIPs(primary)), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("round %d: create: %v", i, err)
		}
		created.Spec.IPFamilyPolicy = ptrTo(corev1.IPFamilyPolicyRequireDualStack)
		up, err := svcs.Update(ctx, created, metav1.UpdateOptions{})
		if err != nil {
			t.Errorf("round %d: upgrade to RequireDualStack: %v", i, err)
		} else {
			secondaries = append(secondaries, up.Spec.ClusterIPs[1])
		}
		if err := svcs.Delete(ctx, "grid", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("round %d: delete: %v", i, err)
		}
	}
	t.Logf("secondaries pinned: %v", secondaries)
}

// TestUpdateGridOnPinnedPath runs every PUT of the update grid (the services
// suite's update differential: 6 starting points × 90 changes, the same name
// created, updated and deleted each time) through the pinning webhook alone
// and requires that none fails with the apiserver's "already allocated": the
// apiserver alone never answers that for these PUTs (their addresses are
// distinct per case), so one here means the webhook pinned a held address.
func TestUpdateGridOnPinnedPath(t *testing.T) {
	env := need(t)
	ctx := context.Background()
	ns := scoped(t, env.Client, instPin, "grid")
	svcs := env.Client.CoreV1().Services(ns)
	n := uint64(1)
	var total, allocated int
	for _, from := range grid.UpdateFroms {
		for _, ch := range grid.UpdateChanges() {
			n += 2
			initial, ok := grid.InitialInput(from, env.ServiceCIDRs, n)
			if !ok {
				continue
			}
			total++
			created, err := svcs.Create(ctx, initial.Service(), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("from=%s/%s: create the starting point: %v", from, ch, err)
			}
			ch.Apply(created)
			if _, err := svcs.Update(ctx, created, metav1.UpdateOptions{}); err != nil && strings.Contains(err.Error(), "already allocated") {
				allocated++
				t.Errorf("from=%s/%s: %v", from, ch, err)
			}
			if err := svcs.Delete(ctx, "grid", metav1.DeleteOptions{}); err != nil {
				t.Fatalf("from=%s/%s: delete: %v", from, ch, err)
			}
		}
	}
	t.Logf("update grid on the pinned path: %d PUTs, %d \"already allocated\"", total, allocated)
}
