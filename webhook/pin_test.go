package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// pinCluster is one cluster shape of the pinning tests: its ServiceCIDRs
// (primary first) and the lowest static-band address of each family.
type pinCluster struct {
	cidrs  []string
	lowest map[corev1.IPFamily]string
	second map[corev1.IPFamily]string
}

func (c pinCluster) families() StaticFamilies {
	var f StaticFamilies
	for _, s := range c.cidrs {
		f = append(f, alloc.FamilyOf(netip.MustParsePrefix(s).Addr()))
	}
	return f
}

var (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol

	pinClusters = map[string]pinCluster{
		"IPv4":      {cidrs: []string{"10.96.0.0/16"}},
		"IPv6":      {cidrs: []string{"fd00:10:96::/108"}},
		"IPv4,IPv6": {cidrs: []string{"10.96.0.0/16", "fd00:10:96::/108"}},
		"IPv6,IPv4": {cidrs: []string{"fd00:10:96::/108", "10.96.0.0/16"}},
	}
	lowest = map[corev1.IPFamily]string{v4: "10.96.0.1", v6: "fd00:10:96::1"}
	second = map[corev1.IPFamily]string{v4: "10.96.0.2", v6: "fd00:10:96::2"}
)

type pinEnv struct {
	*testEnv
	store *memory.Store
	alloc *alloc.Allocator
	fams  StaticFamilies
}

// newPinEnv is a Handler with a real allocator over the memory store, pools
// from doc (empty: the static band).
func newPinEnv(t *testing.T, c pinCluster, doc string) *pinEnv {
	t.Helper()
	var cidrs []netip.Prefix
	for _, s := range c.cidrs {
		cidrs = append(cidrs, netip.MustParsePrefix(s))
	}
	var cfg *alloc.PoolConfig
	if doc != "" {
		var err error
		if cfg, err = alloc.ParseConfig([]byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	pools, err := alloc.Compile(cfg, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	a, err := alloc.New(st, pools, alloc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fams := c.families()
	e := newEnv(t, Options{Families: fams, Allocator: a, Namespace: "dualstack-webhook", PoolsConfigMap: "pools"})
	return &pinEnv{testEnv: e, store: st, alloc: a, fams: fams}
}

// applyPatch applies the webhook's JSONPatch (add/replace/remove of /spec
// members, all it ever writes) to a Service manifest.
func applyPinPatch(t *testing.T, obj string, patch []byte) string {
	t.Helper()
	if len(patch) == 0 {
		return obj
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(obj), &m); err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op, Path string
		Value    any
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		if len(parts) != 2 || parts[0] != "spec" {
			t.Fatalf("unexpected patch path %q", op.Path)
		}
		spec, _ := m["spec"].(map[string]any)
		switch op.Op {
		case "add":
			spec[parts[1]] = op.Value
		case "replace":
			if _, ok := spec[parts[1]]; !ok {
				t.Fatalf("replace of absent member %s", op.Path)
			}
			spec[parts[1]] = op.Value
		case "remove":
			delete(spec, parts[1])
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// clusterIPsOf returns spec.clusterIP and spec.clusterIPs of a manifest.
func clusterIPsOf(t *testing.T, obj string) (string, []string) {
	t.Helper()
	var s corev1.Service
	if err := json.Unmarshal([]byte(obj), &s); err != nil {
		t.Fatal(err)
	}
	return s.Spec.ClusterIP, s.Spec.ClusterIPs
}

func (e *pinEnv) mutate(r reviewSpec) *admissionv1.AdmissionResponse {
	e.t.Helper()
	_, resp := e.review("/mutate", r.JSON())
	return resp
}

func (e *pinEnv) validate(r reviewSpec) *admissionv1.AdmissionResponse {
	e.t.Helper()
	_, resp := e.review("/validate", r.JSON())
	return resp
}

func (e *pinEnv) reservations() []alloc.Reservation {
	e.t.Helper()
	rs, err := e.store.List(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

func wantAllowed(t *testing.T, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
}

func TestCreatePinsFromTheStaticBandInEveryFamilyOrder(t *testing.T) {
	for name, c := range pinClusters {
		for _, pol := range []string{"SingleStack", "PreferDualStack"} {
			t.Run(name+"/"+pol, func(t *testing.T) {
				e := newPinEnv(t, c, "")
				obj := svc("web", selector+`,"ipFamilyPolicy":"`+pol+`"`)
				resp := e.mutate(reviewSpec{object: obj})
				wantAllowed(t, resp)
				got := applyPinPatch(t, obj, resp.Patch)
				ip, ips := clusterIPsOf(t, got)
				want := []string{lowest[e.fams[0]]}
				if pol == "PreferDualStack" && len(e.fams) == 2 {
					want = append(want, lowest[e.fams[1]])
				}
				if ip != want[0] || strings.Join(ips, ",") != strings.Join(want, ",") {
					t.Fatalf("clusterIP %q clusterIPs %v, want %v", ip, ips, want)
				}
				rs := e.reservations()
				if len(rs) != len(want) {
					t.Fatalf("%d reservations, want %d", len(rs), len(want))
				}
				for _, r := range rs {
					if r.State != alloc.StatePending || r.Owner.Key() != "demo/web" {
						t.Errorf("reservation %+v, want pending for demo/web", r)
					}
				}

				// Re-invocation on our own output (new request UID): a no-op.
				resp = e.mutate(reviewSpec{uid: "uid-2", object: got})
				wantAllowed(t, resp)
				if len(resp.Patch) != 0 {
					t.Errorf("re-invocation patched: %s", resp.Patch)
				}
				if n := len(e.reservations()); n != len(want) {
					t.Errorf("re-invocation left %d reservations, want %d", n, len(want))
				}
				// /validate allows what /mutate produced.
				wantAllowed(t, e.validate(reviewSpec{uid: "uid-3", object: got}))

				// A second Service gets the next address.
				obj2 := svc("api", selector)
				resp = e.mutate(reviewSpec{uid: "uid-4", object: obj2})
				wantAllowed(t, resp)
				if ip, _ := clusterIPsOf(t, applyPinPatch(t, obj2, resp.Patch)); ip != second[e.fams[0]] {
					t.Errorf("second Service got %q, want %q", ip, second[e.fams[0]])
				}
			})
		}
	}
}

func TestDryRunAnswersTheSameAndPersistsNothing(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, c, "")
			obj := svc("web", selector+`,"ipFamilyPolicy":"PreferDualStack"`)
			dry := e.mutate(reviewSpec{object: obj, dryRun: true})
			wantAllowed(t, dry)
			if n := len(e.reservations()); n != 0 {
				t.Fatalf("dry run persisted %d reservations", n)
			}
			real := e.mutate(reviewSpec{uid: "uid-2", object: obj})
			if string(dry.Patch) != string(real.Patch) || len(real.Patch) == 0 {
				t.Errorf("dry-run patch %s differs from the real one %s", dry.Patch, real.Patch)
			}
		})
	}
}

func TestGenerateNameIsPendingAndItsOwnOutputPasses(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, c, "")
			obj := `{"apiVersion":"v1","kind":"Service","metadata":{"generateName":"web-","namespace":"demo"},"spec":{` + selector + `}}`
			resp := e.mutate(reviewSpec{object: obj})
			wantAllowed(t, resp)
			got := applyPinPatch(t, obj, resp.Patch)
			ip, _ := clusterIPsOf(t, got)
			if ip != lowest[e.fams[0]] {
				t.Fatalf("clusterIP %q, want %q", ip, lowest[e.fams[0]])
			}
			rs := e.reservations()
			if len(rs) != 1 || rs[0].Owner.GenerateName != "web-" || rs[0].Owner.RequestUID != "uid-1" || rs[0].Owner.Name != "" {
				t.Fatalf("reservations %+v, want one pending for web-* by request uid-1", rs)
			}
			// Re-invocation: a new request UID, no name yet.
			resp = e.mutate(reviewSpec{uid: "uid-2", object: got})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 {
				t.Errorf("re-invocation patched: %s", resp.Patch)
			}
			// /validate sees the generated name.
			named := strings.Replace(got, `"generateName":"web-"`, `"generateName":"web-","name":"web-x7k2p"`, 1)
			wantAllowed(t, e.validate(reviewSpec{uid: "uid-3", name: "web-x7k2p", object: named}))
			// Another generateName Service of the same prefix does not get it.
			resp = e.mutate(reviewSpec{uid: "uid-4", object: obj})
			if ip2, _ := clusterIPsOf(t, applyPinPatch(t, obj, resp.Patch)); ip2 == ip {
				t.Errorf("two generateName Services got %s", ip)
			}
		})
	}
}

func TestGivenIPsAreCheckedAgainstTheState(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, c, "")
			p := e.fams[0]
			wantAllowed(t, e.mutate(reviewSpec{object: svc("holder", selector)}))

			// Held by another Service: denied, naming the holder, by both.
			taken := svc("thief", selector+fmt.Sprintf(`,"clusterIP":%q`, lowest[p]))
			wantDenied(t, e.mutate(reviewSpec{uid: "uid-2", object: taken}), "held by demo/holder")
			wantDenied(t, e.validate(reviewSpec{uid: "uid-3", object: taken}), "held by demo/holder")

			// Outside every ServiceCIDR: the apiserver's own text.
			out := map[corev1.IPFamily]string{v4: "10.97.0.5", v6: "fd00:10:97::5"}[p]
			outside := svc("lost", selector+fmt.Sprintf(`,"clusterIP":%q`, out))
			msg := fmt.Sprintf(`spec.clusterIPs: Invalid value: ["%s"]: failed to allocate IP %s: the provided network does not match the current range`, out, out)
			wantDenied(t, e.mutate(reviewSpec{uid: "uid-4", object: outside}), msg)
			wantDenied(t, e.validate(reviewSpec{uid: "uid-5", object: outside}), "the provided network does not match the current range")

			// Free and inside the pool: reserved for the Service that asks.
			free := svc("byhand", selector+fmt.Sprintf(`,"clusterIP":%q`, second[p]))
			resp := e.mutate(reviewSpec{uid: "uid-6", object: free})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 && strings.Contains(string(resp.Patch), "clusterIP") {
				t.Errorf("a given clusterIP was rewritten: %s", resp.Patch)
			}
			r, ok, _ := e.store.Get(context.Background(), netip.MustParseAddr(second[p]))
			if !ok || r.Owner.Name != "byhand" {
				t.Fatalf("requested address not reserved for demo/byhand: %+v", r)
			}
			// ... and then refused to the next one, naming it.
			again := svc("late", selector+fmt.Sprintf(`,"clusterIP":%q`, second[p]))
			wantDenied(t, e.mutate(reviewSpec{uid: "uid-7", object: again}), "held by demo/byhand")
			// dry run of a conflict gives the same denial and writes nothing.
			n := len(e.reservations())
			wantDenied(t, e.mutate(reviewSpec{uid: "uid-8", object: again, dryRun: true}), "held by demo/byhand")
			if len(e.reservations()) != n {
				t.Error("dry-run denial changed the state")
			}
		})
	}
}

func TestUpgradePinsOnlyTheSecondary(t *testing.T) {
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, pinClusters[name], "")
			p, s := e.fams[0], e.fams[1]
			primary := "10.96.200.7" // a dynamic address outside the static band
			if p == v6 {
				primary = "fd00:10:96::f:7"
			}
			old := svc("web", selector+fmt.Sprintf(`,"clusterIP":%q,"clusterIPs":[%q],"ipFamilyPolicy":"SingleStack","ipFamilies":[%q]`, primary, primary, p))
			obj := svc("web", selector+fmt.Sprintf(`,"clusterIP":%q,"clusterIPs":[%q],"ipFamilyPolicy":"PreferDualStack","ipFamilies":[%q]`, primary, primary, p))
			resp := e.mutate(reviewSpec{op: "UPDATE", name: "web", object: obj, oldObject: old})
			wantAllowed(t, resp)
			if strings.Contains(string(resp.Patch), `"/spec/clusterIP"`) {
				t.Errorf("the primary was touched: %s", resp.Patch)
			}
			got := applyPinPatch(t, obj, resp.Patch)
			ip, ips := clusterIPsOf(t, got)
			if ip != primary || len(ips) != 2 || ips[0] != primary || ips[1] != lowest[s] {
				t.Fatalf("clusterIP %q clusterIPs %v, want [%s %s]", ip, ips, primary, lowest[s])
			}
			rs := e.reservations()
			if len(rs) != 1 || rs[0].IP.String() != lowest[s] {
				t.Fatalf("reservations %+v, want only the secondary", rs)
			}
			// Re-invocation of the upgrade: no-op.
			resp = e.mutate(reviewSpec{op: "UPDATE", uid: "uid-2", name: "web", object: got, oldObject: old})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 {
				t.Errorf("re-invocation patched: %s", resp.Patch)
			}
			wantAllowed(t, e.validate(reviewSpec{op: "UPDATE", uid: "uid-3", name: "web", object: got, oldObject: old}))

			// Downgrade: nothing happens at admission.
			down := svc("web", selector+fmt.Sprintf(`,"clusterIP":%q,"clusterIPs":[%q],"ipFamilyPolicy":"SingleStack","ipFamilies":[%q]`, primary, primary, p))
			wantAllowed(t, e.mutate(reviewSpec{op: "UPDATE", uid: "uid-4", name: "web", object: down, oldObject: got}))
			if len(e.reservations()) != 1 {
				t.Error("downgrade changed the state at admission")
			}
		})
	}
}

func TestUpdateNeverDeniesAddressesTheServiceAlreadyHas(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4"], "")
	wantAllowed(t, e.mutate(reviewSpec{object: svc("holder", selector)}))
	// A Service that (per our state) conflicts, but already has the address:
	// only the apiserver's view counts for what is stored.
	obj := svc("old", selector+`,"clusterIP":"10.96.0.1","clusterIPs":["10.96.0.1"],"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]`)
	wantAllowed(t, e.mutate(reviewSpec{op: "UPDATE", name: "old", object: obj, oldObject: obj}))
	wantAllowed(t, e.validate(reviewSpec{op: "UPDATE", name: "old", object: obj, oldObject: obj}))
}

func TestFromExternalNameAllocates(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4,IPv6"], "")
	old := svc("web", `"type":"ExternalName","externalName":"example.com"`)
	obj := svc("web", selector)
	resp := e.mutate(reviewSpec{op: "UPDATE", name: "web", object: obj, oldObject: old})
	wantAllowed(t, resp)
	if ip, _ := clusterIPsOf(t, applyPinPatch(t, obj, resp.Patch)); ip != "10.96.0.1" {
		t.Fatalf("clusterIP %q, want 10.96.0.1", ip)
	}
}

func TestNotPinned(t *testing.T) {
	cases := map[string]reviewSpec{
		"headless":           {object: svc("h", selector+`,"clusterIP":"None"`)},
		"ExternalName":       {object: svc("x", `"type":"ExternalName","externalName":"example.com"`)},
		"default/kubernetes": {namespace: "default", name: "kubernetes", object: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"kubernetes","namespace":"default"},"spec":{` + selector + `}}`},
		"skip label":         {object: svcWithLabels("s", `{"dualstack-webhook.io/skip":"true"}`, selector)},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, pinClusters["IPv4,IPv6"], "")
			resp := e.mutate(r)
			wantAllowed(t, resp)
			if strings.Contains(string(resp.Patch), "clusterIP") {
				t.Errorf("pinned: %s", resp.Patch)
			}
			if n := len(e.reservations()); n != 0 {
				t.Errorf("%d reservations", n)
			}
		})
	}
}

func TestPinningOffAndDefaultEndpointHaveNoSideEffects(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4"], "")
	_, resp := e.review("/default", reviewSpec{object: svc("web", selector)}.JSON())
	wantAllowed(t, resp)
	if strings.Contains(string(resp.Patch), "clusterIP") || len(e.reservations()) != 0 {
		t.Errorf("/default pinned: %s", resp.Patch)
	}
	off := newEnv(t, Options{Families: StaticFamilies{v4}})
	_, resp = off.review("/mutate", reviewSpec{object: svc("web", selector)}.JSON())
	wantAllowed(t, resp)
	if strings.Contains(string(resp.Patch), "clusterIP") {
		t.Errorf("pinning off, but pinned: %s", resp.Patch)
	}
}

const tinyPools = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: tiny
pools:
- name: tiny
  addresses: {ipv4: ["10.96.0.10"], ipv6: ["fd00:10:96::10"]}
- name: drained
  state: draining
  addresses: {ipv4: ["10.96.0.20"], ipv6: ["fd00:10:96::20"]}
`

func TestExhaustedOrDrainingPoolWarnsAndLeavesTheFamilyToTheApiserver(t *testing.T) {
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, pinClusters[name], tinyPools)
			wantAllowed(t, e.mutate(reviewSpec{object: svc("first", selector+`,"ipFamilyPolicy":"PreferDualStack"`)}))
			obj := svc("second", selector+`,"ipFamilyPolicy":"PreferDualStack"`)
			resp := e.mutate(reviewSpec{uid: "uid-2", object: obj})
			wantAllowed(t, resp)
			if strings.Contains(string(resp.Patch), "clusterIP") {
				t.Errorf("pinned from an exhausted pool: %s", resp.Patch)
			}
			if len(resp.Warnings) == 0 || !strings.Contains(strings.Join(resp.Warnings, "\n"), "dynamic allocation") {
				t.Errorf("warnings %q, want one about dynamic allocation", resp.Warnings)
			}
			if n := len(e.reservations()); n != 2 {
				t.Errorf("%d reservations, want the first Service's 2", n)
			}
			drained := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"d","namespace":"demo","annotations":{"dualstack-webhook.io/pool":"drained"}},"spec":{` + selector + `}}`
			resp = e.mutate(reviewSpec{uid: "uid-3", object: drained})
			wantAllowed(t, resp)
			if strings.Contains(string(resp.Patch), "clusterIP") || len(resp.Warnings) == 0 {
				t.Errorf("draining pool: patch %s warnings %q", resp.Patch, resp.Warnings)
			}
		})
	}
}

func TestUnknownPoolAnnotationIsDenied(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4"], "")
	obj := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"w","namespace":"demo","annotations":{"dualstack-webhook.io/pool":"nope"}},"spec":{` + selector + `}}`
	wantDenied(t, e.mutate(reviewSpec{object: obj}), `metadata.annotations[dualstack-webhook.io/pool]: Invalid value: "nope": no pool of that name`)
}

func TestTransientStoreErrorsAre500(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4"], "")
	e.h.alloc = failingAllocator{e.alloc}
	_, resp := e.review("/mutate", reviewSpec{object: svc("w", selector)}.JSON())
	wantErrored(t, resp, 500, "allocator state not ready")
}

type failingAllocator struct{ *alloc.Allocator }

func (failingAllocator) Reserve(context.Context, alloc.Request) (alloc.Result, error) {
	return alloc.Result{}, fmt.Errorf("reading reservations: %w", alloc.ErrNotReady)
}

func poolsReview(uid, op, name, doc string) reviewSpec {
	data, _ := json.Marshal(map[string]string{"pools.yaml": doc})
	return reviewSpec{
		uid: uid, op: op, name: name, namespace: "dualstack-webhook",
		kind:     `{"group":"","version":"v1","kind":"ConfigMap"}`,
		resource: `{"group":"","version":"v1","resource":"configmaps"}`,
		object:   fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"namespace":"dualstack-webhook"},"data":%s}`, name, data),
	}
}

func TestPoolsConfigMapIsGuarded(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4,IPv6"], tinyPools)
	wantAllowed(t, e.mutate(reviewSpec{object: svc("web", selector)})) // holds 10.96.0.10 in "tiny"

	overlap := strings.Replace(tinyPools, `ipv4: ["10.96.0.20"]`, `ipv4: ["10.96.0.10"]`, 1)
	_, resp := e.review("/validate", poolsReview("u1", "UPDATE", "pools", overlap).JSON())
	wantPoolsDenied(t, resp, `overlaps pool "tiny" at 10.96.0.10`)

	outside := strings.Replace(tinyPools, `"10.96.0.20"`, `"10.97.0.20"`, 1)
	_, resp = e.review("/validate", poolsReview("u2", "UPDATE", "pools", outside).JSON())
	wantPoolsDenied(t, resp, "10.97.0.20 is outside every ServiceCIDR")

	removed := strings.Replace(tinyPools, `["10.96.0.10"]`, `["10.96.0.11"]`, 1)
	_, resp = e.review("/validate", poolsReview("u3", "UPDATE", "pools", removed).JSON())
	wantPoolsDenied(t, resp, "10.96.0.10 is pending by demo/web")

	_, resp = e.review("/validate", poolsReview("u4", "UPDATE", "pools", tinyPools).JSON())
	wantAllowed(t, resp)
	_, resp = e.review("/validate", poolsReview("u5", "CREATE", "unrelated", overlap).JSON())
	wantAllowed(t, resp)
}

func wantPoolsDenied(t *testing.T, resp *admissionv1.AdmissionResponse, msgPart string) {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("allowed, want denied with %q", msgPart)
	}
	st := resp.Result
	if st == nil || st.Code != 422 || st.Reason != "Invalid" || st.Details == nil || st.Details.Kind != "ConfigMap" {
		t.Fatalf("status %+v, want 422 Invalid on a ConfigMap", st)
	}
	if !strings.Contains(st.Message, msgPart) || !strings.Contains(st.Message, "data[pools.yaml]") {
		t.Errorf("message %q does not contain %q", st.Message, msgPart)
	}
}

func TestExhaustedSecondaryKeepsThePinnedPrimary(t *testing.T) {
	doc := `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: p
pools:
- name: p
  addresses: {ipv4: ["10.96.0.10-10.96.0.11"], ipv6: ["fd00:10:96::10-fd00:10:96::11"]}
`
	for _, name := range []string{"IPv4,IPv6", "IPv6,IPv4"} {
		t.Run(name, func(t *testing.T) {
			e := newPinEnv(t, pinClusters[name], doc)
			s := e.fams[1]
			// Take the secondary family's last free address by hand.
			wantAllowed(t, e.mutate(reviewSpec{object: svc("one", selector+`,"ipFamilyPolicy":"PreferDualStack"`)}))
			last := map[corev1.IPFamily]string{v4: "10.96.0.11", v6: "fd00:10:96::11"}[s]
			wantAllowed(t, e.mutate(reviewSpec{uid: "u2", object: svc("single", selector+fmt.Sprintf(`,"ipFamilyPolicy":"SingleStack","ipFamilies":[%q],"clusterIP":%q`, s, last))}))

			obj := svc("two", selector+`,"ipFamilyPolicy":"PreferDualStack"`)
			resp := e.mutate(reviewSpec{uid: "u3", object: obj})
			wantAllowed(t, resp)
			_, ips := clusterIPsOf(t, applyPinPatch(t, obj, resp.Patch))
			want := map[corev1.IPFamily]string{v4: "10.96.0.11", v6: "fd00:10:96::11"}[e.fams[0]]
			if len(ips) != 1 || ips[0] != want {
				t.Fatalf("clusterIPs %v, want only the pinned primary [%s]", ips, want)
			}
			if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], string(s)+" left to the apiserver") {
				t.Errorf("warnings %q, want one saying %s is left to the apiserver", resp.Warnings, s)
			}
		})
	}
}

// TestMovingFromTheStaticBandToADocument: what docs/pinning.md advises
// passes the guard; a document that drops the implicit pool is refused.
func TestMovingFromTheStaticBandToADocument(t *testing.T) {
	e := newPinEnv(t, pinClusters["IPv4"], "")
	wantAllowed(t, e.mutate(reviewSpec{object: svc("web", selector)})) // 10.96.0.1 in static-band
	fresh := `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses: {ipv4: ["10.96.2.0/24"]}
`
	_, resp := e.review("/validate", poolsReview("u1", "CREATE", "pools", fresh).JSON())
	wantPoolsDenied(t, resp, "10.96.0.1")
	kept := fresh + `- name: static-band
  state: draining
  addresses: {ipv4: ["10.96.0.1-10.96.1.0"]}
`
	_, resp = e.review("/validate", poolsReview("u2", "CREATE", "pools", kept).JSON())
	wantAllowed(t, resp)
}

// TestRestrictedPoolDenials: a pool limited to namespaces [payments] or
// namespaces labelled team=payments is refused to demo/web, by annotation
// and by an explicit address, on /mutate and /validate, with the field at
// fault and the pool's audience in the message; the same Service is served
// once its Namespace carries the label, and the default pool stays open.
func TestRestrictedPoolDenials(t *testing.T) {
	payments := paymentsAt
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			fams := c.families()
			doc := paymentsPools(fams, second, "  namespaces: [payments]\n  namespaceSelector: {matchLabels: {team: payments}}\n")
			p := fams[0]
			annotated := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"demo","annotations":{"dualstack-webhook.io/pool":"payments"}},"spec":{` + selector + `}}`
			explicit := svc("web", selector+fmt.Sprintf(`,"clusterIP":%q`, payments[p]))
			audience := `pool "payments", which serves only namespaces [payments] or namespaces matching team=payments; demo/web is not one of them`

			e := newPinEnv(t, c, doc)
			wantDenied(t, e.mutate(reviewSpec{object: annotated}),
				`metadata.annotations[dualstack-webhook.io/pool]: Forbidden: pool "payments" serves only namespaces [payments] or namespaces matching team=payments; demo/web is not one of them`)
			wantDenied(t, e.mutate(reviewSpec{uid: "uid-2", object: explicit}),
				fmt.Sprintf(`spec.clusterIPs: Forbidden: IP %s belongs to %s`, payments[p], audience))
			wantDenied(t, e.validate(reviewSpec{uid: "uid-3", object: explicit}), audience)
			if n := len(e.reservations()); n != 0 {
				t.Fatalf("denials left %d reservations", n)
			}
			// Unannotated, the same Service is pinned from the open default pool.
			resp := e.mutate(reviewSpec{uid: "uid-4", object: svc("web", selector)})
			wantAllowed(t, resp)
			if ip, _ := clusterIPsOf(t, applyPinPatch(t, svc("web", selector), resp.Patch)); ip != lowest[p] {
				t.Errorf("default pool gave %q, want %q", ip, lowest[p])
			}

			// The Namespace labelled team=payments: both are served.
			e2 := newPinEnv(t, c, doc)
			e2.testEnv = newEnv(t, Options{Families: e2.fams, Allocator: e2.alloc, Namespace: "dualstack-webhook", PoolsConfigMap: "pools",
				Namespaces: fakeNamespaces{"demo": {ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"team": "payments"}}}}})
			resp = e2.mutate(reviewSpec{object: annotated})
			wantAllowed(t, resp)
			if ip, _ := clusterIPsOf(t, applyPinPatch(t, annotated, resp.Patch)); ip != payments[p] {
				t.Errorf("annotated Service of a team=payments namespace got %q, want %q", ip, payments[p])
			}
			other := svc("db", selector+fmt.Sprintf(`,"clusterIP":%q`, strings.TrimSuffix(payments[p], "00")+"50"))
			wantAllowed(t, e2.mutate(reviewSpec{uid: "uid-2", object: other}))
			wantAllowed(t, e2.validate(reviewSpec{uid: "uid-3", object: other}))
		})
	}
}

// TestUpdateLeavingAServiceSelectorWarnsAndKeeps: an UPDATE whose new labels
// leave the serviceSelector of the pool holding the Service's address is
// allowed, keeps the address, and says so in a warning; an UPDATE that keeps
// the labels says nothing.
func TestUpdateLeavingAServiceSelectorWarnsAndKeeps(t *testing.T) {
	edge := map[corev1.IPFamily]string{v4: "10.96.0.200", v6: "fd00:10:96::200"}
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			fams := c.families()
			addrs := ""
			for _, f := range fams {
				addrs += fmt.Sprintf("    %s: [%q]\n", strings.ToLower(string(f)), edge[f])
			}
			doc := "apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\npools:\n" +
				"- name: edge\n  serviceSelector: {matchLabels: {role: edge}}\n  addresses:\n" + addrs
			e := newPinEnv(t, c, doc)
			p := fams[0]
			spec := selector + fmt.Sprintf(`,"clusterIP":%q,"clusterIPs":[%q],"ipFamilyPolicy":"SingleStack","ipFamilies":[%q]`, edge[p], edge[p], p)
			old := svcWithLabels("web", `{"role":"edge"}`, spec)

			resp := e.mutate(reviewSpec{op: "UPDATE", name: "web", object: svcWithLabels("web", `{"role":"db"}`, spec), oldObject: old})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 {
				t.Errorf("patched: %s", resp.Patch)
			}
			want := fmt.Sprintf(`demo/web keeps %s, but its new labels leave pool "edge", which serves only Services matching role=edge: it can get no new address from that pool`, edge[p])
			if len(resp.Warnings) != 1 || resp.Warnings[0] != want {
				t.Errorf("warnings %q, want [%q]", resp.Warnings, want)
			}
			resp = e.mutate(reviewSpec{uid: "uid-2", op: "UPDATE", name: "web", object: svcWithLabels("web", `{"role":"edge","v":"2"}`, spec), oldObject: old})
			wantAllowed(t, resp)
			if len(resp.Warnings) != 0 {
				t.Errorf("warnings %q for an update that stays in the pool", resp.Warnings)
			}
		})
	}
}

// paymentsPools is a pools document with the open default pool general
// (the lowest address to upto of each family) and the pool payments (the
// range from paymentsAt to the same address ending in 50), restricted by the
// YAML lines access.
func paymentsPools(fams []corev1.IPFamily, upto map[corev1.IPFamily]string, access string) string {
	general, pay := "", ""
	for _, f := range fams {
		k := strings.ToLower(string(f))
		general += fmt.Sprintf("    %s: [%q]\n", k, lowest[f]+"-"+upto[f])
		pay += fmt.Sprintf("    %s: [%q]\n", k, paymentsAt[f]+"-"+strings.TrimSuffix(paymentsAt[f], "00")+"50")
	}
	return "apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\ndefaultPool: general\npools:\n" +
		"- name: general\n  addresses:\n" + general +
		"- name: payments\n" + access + "  addresses:\n" + pay
}

// paymentsAt is the first address of paymentsPools' pool payments.
var paymentsAt = map[corev1.IPFamily]string{v4: "10.96.0.200", v6: "fd00:10:96::200"}
