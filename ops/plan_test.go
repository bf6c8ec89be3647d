package ops

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

func snapshot(t *testing.T, doc string, cidrs []networkingv1.ServiceCIDR, svcs ...corev1.Service) *Snapshot {
	t.Helper()
	return &Snapshot{Namespace: "dsw", PoolsConfigMap: DefaultPoolsConfigMap, Config: parseDoc(t, doc), ServiceCIDRs: cidrs, Services: svcs,
		NamespaceLabels: map[string]map[string]string{"a": {"team": "a"}, "b": {"team": "b"}, "default": {}}}
}

func actions(p *Plan) []Action {
	var out []Action
	for _, s := range p.Steps {
		out = append(out, s.Action)
	}
	return out
}

func sel(s string) labels.Selector { x, _ := labels.Parse(s); return x }

func TestParseScenario(t *testing.T) {
	for _, s := range []string{"extend", "single-to-dual", "dual-to-single", "replace-primary"} {
		if got, err := ParseScenario(s); err != nil || string(got) != s {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	if _, err := ParseScenario("grow"); err == nil || !strings.Contains(err.Error(), "extend, single-to-dual, dual-to-single, replace-primary") {
		t.Errorf("unknown scenario: %v", err)
	}
}

func TestPlanExtend(t *testing.T) {
	v4only := []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16")}
	dual := []networkingv1.ServiceCIDR{scidr("kubernetes", "fd00:10:96::/108", "10.96.0.0/16")}
	t.Run("implicit pools are materialized, band pool added", func(t *testing.T) {
		p, err := BuildPlan(snapshot(t, "", v4only), Extend, Options{CIDR: netip.MustParsePrefix("10.97.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if want := []Action{ActCreateServiceCIDR, ActWaitReady, ActEditPools}; !reflect.DeepEqual(actions(p), want) {
			t.Fatalf("steps %v, want %v", actions(p), want)
		}
		if got := p.Steps[0].ServiceCIDR; got.Name != "extend-10-97-0-0-24" || !reflect.DeepEqual(got.CIDRs, []string{"10.97.0.0/24"}) {
			t.Errorf("ServiceCIDR %+v", got)
		}
		e := p.Steps[2].Pools
		if e.Materialize == nil || !reflect.DeepEqual(e.Materialize.Addresses.IPv4, []string{"10.96.0.1-10.96.1.0"}) || e.DefaultPool != alloc.StaticBandPool {
			t.Errorf("materialize %+v default %q", e.Materialize, e.DefaultPool)
		}
		if e.Pool != "extend-10-97-0-0-24" || !reflect.DeepEqual(e.Add.IPv4, []string{"10.97.0.1-10.97.0.16"}) {
			t.Errorf("edit %+v", e)
		}
	})
	t.Run("IPv6 whole range into an existing pool, IPv6 primary", func(t *testing.T) {
		doc := `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses: {ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
`
		p, err := BuildPlan(snapshot(t, doc, dual), Extend, Options{CIDR: netip.MustParsePrefix("fd00:10:97::/120"), PoolName: "general", PoolRange: PoolRangeWhole, CIDRName: "more"})
		if err != nil {
			t.Fatal(err)
		}
		e := p.Steps[2].Pools
		if e.Materialize != nil || e.Pool != "general" || !reflect.DeepEqual(e.Add.IPv6, []string{"fd00:10:97::1-fd00:10:97::ff"}) {
			t.Errorf("edit %+v", e)
		}
		next, changed, err := e.ApplyTo(snapshot(t, doc, dual).Config)
		if err != nil || !changed || !reflect.DeepEqual(next.Pools[0].Addresses.IPv6, []string{"fd00:10:96::10-fd00:10:96::20", "fd00:10:97::1-fd00:10:97::ff"}) {
			t.Errorf("applied: %+v %v %v", next, changed, err)
		}
	})
	t.Run("re-run after apply plans nothing", func(t *testing.T) {
		s := snapshot(t, "", append(v4only, scidr("extend-10-97-0-0-24", "10.97.0.0/24")))
		first, err := BuildPlan(snapshot(t, "", v4only), Extend, Options{CIDR: netip.MustParsePrefix("10.97.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		s.Config, _, _ = first.Steps[2].Pools.ApplyTo(s.Config)
		p, err := BuildPlan(s, Extend, Options{CIDR: netip.MustParsePrefix("10.97.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Steps) != 0 {
			t.Errorf("second plan has steps %v", actions(p))
		}
	})
	errs := []struct {
		name string
		s    *Snapshot
		o    Options
		want string
	}{
		{"no cidr", snapshot(t, "", v4only), Options{}, "needs --cidr"},
		{"overlap", snapshot(t, "", v4only), Options{CIDR: netip.MustParsePrefix("10.96.128.0/24")}, "overlaps 10.96.0.0/16 of ServiceCIDR \"kubernetes\""},
		{"other family", snapshot(t, "", v4only), Options{CIDR: netip.MustParsePrefix("fd00::/120")}, "single-to-dual"},
		{"host bits", snapshot(t, "", v4only), Options{CIDR: netip.MustParsePrefix("10.97.0.1/24")}, "host bits"},
		{"tiny has no band", snapshot(t, "", v4only), Options{CIDR: netip.MustParsePrefix("10.97.0.0/28")}, "no static band"},
		{"name taken", snapshot(t, "", append(v4only, scidr("x", "10.98.0.0/24"))), Options{CIDR: netip.MustParsePrefix("10.97.0.0/24"), CIDRName: "x"}, "already exists"},
		{"pool overlap", snapshot(t, `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
pools:
- name: a
  addresses: {ipv4: ["10.96.0.5"]}
`, v4only), Options{CIDR: netip.MustParsePrefix("10.97.0.0/24"), PoolName: "a", PoolRange: "all"}, "--pool-range"},
	}
	for _, tc := range errs {
		t.Run("error/"+tc.name, func(t *testing.T) {
			_, err := BuildPlan(tc.s, Extend, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestPlanSingleToDual(t *testing.T) {
	cidrs := []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16")}
	web := svc("a", "web", v4, "10.96.0.10")
	web.Labels = map[string]string{"app": "web"}
	other := svc("b", "other", v4, "10.96.0.11")
	already := svc("a", "dual", v4v6, "10.96.0.12", "fd00:10:96::12")
	ext := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "x.example"}}
	s := snapshot(t, "", cidrs, web, other, already, ext, svc("default", "kubernetes", v4, "10.96.0.1"))
	p, err := BuildPlan(s, SingleToDual, Options{CIDR: netip.MustParsePrefix("fd00:10:96::/108"), NamespaceSelector: sel("team=a")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Action{ActCreateServiceCIDR, ActWaitReady, ActEditPools, ActCheckFamily, ActServices}; !reflect.DeepEqual(actions(p), want) {
		t.Fatalf("steps %v, want %v", actions(p), want)
	}
	if e := p.Steps[2].Pools; e.Pool != alloc.StaticBandPool || !reflect.DeepEqual(e.Add.IPv6, []string{"fd00:10:96::1-fd00:10:96::100"}) {
		t.Errorf("edit %+v", e)
	}
	if len(p.Services) != 1 || p.Services[0].Key() != "a/web" || p.Services[0].Change != Upgrade || !reflect.DeepEqual(p.Services[0].IPFamilies, []string{"IPv4", "IPv6"}) {
		t.Errorf("services %+v", p.Services)
	}
	// Label selector instead: only b/other is not labelled app=web.
	p, err = BuildPlan(s, SingleToDual, Options{CIDR: netip.MustParsePrefix("fd00:10:96::/108"), Selector: sel("app!=web")})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Services) != 1 || p.Services[0].Key() != "b/other" {
		t.Errorf("services %+v", p.Services)
	}
	// No selection: no Service is touched, and the plan says why.
	p, err = BuildPlan(s, SingleToDual, Options{CIDR: netip.MustParsePrefix("fd00:10:96::/108")})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Services) != 0 || !strings.Contains(strings.Join(p.Notes, "\n"), "no Services chosen") {
		t.Errorf("services %+v notes %v", p.Services, p.Notes)
	}
	// IPv6 single-stack cluster adding IPv4.
	s6 := snapshot(t, "", []networkingv1.ServiceCIDR{scidr("kubernetes", "fd00:10:96::/108")}, svc("a", "w6", v6, "fd00:10:96::a"))
	p, err = BuildPlan(s6, SingleToDual, Options{CIDR: netip.MustParsePrefix("10.96.0.0/16"), Selector: sel("")})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Services) != 1 || !reflect.DeepEqual(p.Services[0].IPFamilies, []string{"IPv6", "IPv4"}) {
		t.Errorf("services %+v", p.Services)
	}
	if _, err := BuildPlan(s, SingleToDual, Options{CIDR: netip.MustParsePrefix("10.97.0.0/16")}); err == nil || !strings.Contains(err.Error(), "primary family") {
		t.Errorf("same family: %v", err)
	}
}

func TestPlanDualToSingle(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		cidrs                 []string
		remove                corev1.IPFamily
		downgrade, manual     []string
		downgradeFamily, prim string
	}{
		{"remove IPv6 from IPv4-primary", []string{"10.96.0.0/16", "fd00:10:96::/108"}, "IPv6", []string{"a/dual"}, []string{"a/v6primary"}, "IPv4", "10.96.0.12"},
		{"remove IPv4 from IPv6-primary", []string{"fd00:10:96::/108", "10.96.0.0/16"}, "ipv4", []string{"a/v6primary"}, []string{"a/dual", "a/v4only"}, "IPv6", "fd00:10:96::13"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t, "", []networkingv1.ServiceCIDR{scidr("kubernetes", tc.cidrs...)},
				svc("a", "dual", v4v6, "10.96.0.12", "fd00:10:96::12"),
				svc("a", "v6primary", v6v4, "fd00:10:96::13", "10.96.0.13"),
				svc("a", "v4only", v4, "10.96.0.14"),
				// The apiserver's own Service is of the primary family, never removed here.
				svc("default", "kubernetes", []corev1.IPFamily{alloc.FamilyOf(netip.MustParsePrefix(tc.cidrs[0]).Addr())}, netip.MustParsePrefix(tc.cidrs[0]).Addr().Next().String()))
			p, err := BuildPlan(s, DualToSingle, Options{Family: tc.remove})
			if err != nil {
				t.Fatal(err)
			}
			var down, man []string
			for _, c := range p.Services {
				switch c.Change {
				case Downgrade:
					down = append(down, c.Key())
					if !reflect.DeepEqual(c.IPFamilies, []string{tc.downgradeFamily}) || c.IPFamilyPolicy != "SingleStack" || !reflect.DeepEqual(c.NewClusterIPs, []string{tc.prim}) {
						t.Errorf("downgrade %+v", c)
					}
				case RecreateManually:
					man = append(man, c.Key())
				}
			}
			if !reflect.DeepEqual(down, tc.downgrade) || !reflect.DeepEqual(man, tc.manual) {
				t.Errorf("downgrade %v manual %v, want %v %v", down, man, tc.downgrade, tc.manual)
			}
		})
	}
	// Removing the primary family: every Service of it, the apiserver's
	// own included, is reported and left alone.
	s := snapshot(t, "", []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16", "fd00:10:96::/108")},
		svc("default", "kubernetes", v4, "10.96.0.1"), svc("a", "dual", v4v6, "10.96.0.12", "fd00:10:96::12"))
	p, err := BuildPlan(s, DualToSingle, Options{Family: "IPv4"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Services) != 2 || p.Services[0].Change != RecreateManually || !strings.Contains(p.Services[0].Note, "the apiserver's own Service") ||
		p.Services[1].Change != RecreateManually || len(p.Steps) != 0 || !strings.Contains(p.Notes[0], "PRIMARY") {
		t.Errorf("plan %+v", p)
	}
	for _, f := range []corev1.IPFamily{"", "IPv5"} {
		if _, err := BuildPlan(s, DualToSingle, Options{Family: f}); err == nil {
			t.Errorf("family %q accepted", f)
		}
	}
}

func TestPlanReplacePrimary(t *testing.T) {
	cidrs := []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16", "fd00:10:96::/108")}
	a := svc("a", "a", v4, "10.96.0.10")
	a.Labels = map[string]string{"keep": "me"}
	b := svc("a", "b", v4v6, "10.96.3.7", "fd00:10:96::7")
	blocked := svc("a", "blocked", v4, "10.96.0.20")
	squatter := svc("b", "squatter", v4, "10.100.0.20") // not in any ServiceCIDR; holds blocked's target
	far := svc("a", "far", v4, "10.96.200.1")           // offset beyond a /17
	v6only := svc("a", "v6", v6, "fd00:10:96::99")
	s := snapshot(t, "", cidrs, a, b, blocked, squatter, far, v6only, svc("default", "kubernetes", v4, "10.96.0.1"))
	p, err := BuildPlan(s, ReplacePrimary, Options{CIDR: netip.MustParsePrefix("10.100.0.0/17")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Action{ActCreateServiceCIDR, ActWaitReady, ActEditPools, ActDeleteServiceCIDR, ActServices, ActPrunePools}; !reflect.DeepEqual(actions(p), want) {
		t.Fatalf("steps %v, want %v", actions(p), want)
	}
	// Both pool edits in sequence: the old band is gone, the IPv6 band of
	// the materialized pool stays, the new pool is the default.
	mid, _, _ := p.Steps[2].Pools.ApplyTo(s.Config)
	final, changed, err := p.Steps[5].Pools.ApplyTo(mid)
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	if sb := final.Pools[0]; sb.Name != "static-band" || len(sb.Addresses.IPv4) != 0 || !reflect.DeepEqual(sb.Addresses.IPv6, []string{"fd00:10:96::1-fd00:10:96::100"}) || final.DefaultPool != "primary-10-100-0-0-17" {
		t.Errorf("after prune: %+v", final)
	}
	if _, err := alloc.Compile(final, []netip.Prefix{netip.MustParsePrefix("10.100.0.0/17"), netip.MustParsePrefix("fd00:10:96::/108")}); err != nil {
		t.Errorf("pruned document invalid without the old range: %v", err)
	}
	if got := p.Steps[0].ServiceCIDR.CIDRs; !reflect.DeepEqual(got, []string{"10.100.0.0/17", "fd00:10:96::/108"}) {
		t.Errorf("new ServiceCIDR %v: the IPv6 range must stay allocatable", got)
	}
	e := p.Steps[2].Pools
	if e.Materialize == nil || !reflect.DeepEqual(e.Drain, []string{"static-band"}) || e.DefaultPool != e.Pool || !reflect.DeepEqual(e.Add.IPv4, []string{"10.100.0.1-10.100.1.0"}) {
		t.Errorf("pool edit %+v", e)
	}
	if p.OldCIDR != "10.96.0.0/16" || p.Steps[3].ServiceCIDR.Name != "kubernetes" {
		t.Errorf("old %s delete %+v", p.OldCIDR, p.Steps[3].ServiceCIDR)
	}
	got := map[string]ServiceChange{}
	for _, c := range p.Services {
		got[c.Key()] = c
	}
	if len(got) != 5 {
		t.Errorf("services %+v", p.Services)
	}
	check := func(k string, change ChangeKind, ips []string, kept bool) {
		t.Helper()
		c, ok := got[k]
		if !ok {
			t.Errorf("%s missing", k)
			return
		}
		if c.Change != change || !reflect.DeepEqual(c.NewClusterIPs, ips) || (c.OffsetKept != nil && *c.OffsetKept != kept) {
			t.Errorf("%s: %+v (offsetKept %v)", k, c, c.OffsetKept != nil && *c.OffsetKept)
		}
	}
	check("a/a", Recreate, []string{"10.100.0.10"}, true)
	check("a/b", Recreate, []string{"10.100.3.7", "fd00:10:96::7"}, true)
	// Offsets not kept: the first free addresses after the new range's
	// static band (10.100.0.1-10.100.1.0), never left to the apiserver,
	// which could pick another ready range of the family.
	check("a/blocked", Recreate, []string{"10.100.1.1"}, false)
	check("a/far", Recreate, []string{"10.100.1.2"}, false)
	check("default/kubernetes", RecreateManually, nil, false)
	if !strings.Contains(got["a/blocked"].Note, "held by b/squatter") || !strings.Contains(got["a/far"].Note, "outside 10.100.0.0/17") {
		t.Errorf("notes: %q / %q", got["a/blocked"].Note, got["a/far"].Note)
	}

	// Resume: a journalled Service is re-created from the journal, and the
	// deleted old ServiceCIDR (Terminating) is not deleted again.
	now := metav1.Now()
	term := scidr("kubernetes", "10.96.0.0/16", "fd00:10:96::/108")
	term.DeletionTimestamp = &now
	s2 := snapshot(t, "", []networkingv1.ServiceCIDR{term, scidr("primary-10-100-0-0-17", "10.100.0.0/17", "fd00:10:96::/108")}, b)
	s2.Config, _, _ = e.ApplyTo(s.Config)
	j := Recreated(&a, []string{"10.100.0.10"})
	s2.Journal = []JournalEntry{{ConfigMap: journalName("a", "a"), Service: j}}
	p, err = BuildPlan(s2, ReplacePrimary, Options{CIDR: netip.MustParsePrefix("10.100.0.0/17"), OldCIDR: netip.MustParsePrefix("10.96.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Action{ActServices, ActPrunePools}; !reflect.DeepEqual(actions(p), want) {
		t.Errorf("resume steps %v, want %v", actions(p), want)
	}
	if len(p.Services) != 2 || !p.Services[0].Resume || p.Services[0].Key() != "a/a" || p.Services[1].Key() != "a/b" {
		t.Errorf("resume services %+v", p.Services)
	}

	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{CIDR: netip.MustParsePrefix("fd00:99::/108")}, "different families"},
		{Options{CIDR: netip.MustParsePrefix("10.96.128.0/17")}, "overlaps"},
		{Options{}, "needs --cidr"},
	} {
		if _, err := BuildPlan(s, ReplacePrimary, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.o, err, tc.want)
		}
	}
}

func TestOffsetIn(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		ip       string
		from, to string
		want     string
	}{
		{"10.96.0.10", "10.96.0.0/16", "10.100.0.0/16", "10.100.0.10"},
		{"10.96.255.255", "10.96.0.0/16", "10.100.0.0/16", ""}, // broadcast
		{"10.96.1.0", "10.96.0.0/16", "10.100.0.0/24", ""},     // beyond
		{"10.96.0.255", "10.96.0.0/16", "10.100.0.0/24", ""},   // lands on the broadcast
		{"fd00:10:96::ff", "fd00:10:96::/108", "fd00:20::/64", "fd00:20::ff"},
		{"fd00:10:96::ff", "fd00:10:96::/108", "10.0.0.0/8", ""},
		{"10.97.0.1", "10.96.0.0/16", "10.100.0.0/16", ""}, // not in from
	} {
		got, ok := offsetIn(netip.MustParseAddr(tc.ip), p(tc.from), p(tc.to))
		if (tc.want == "") == ok || (ok && got.String() != tc.want) {
			t.Errorf("offsetIn(%s, %s, %s) = %v %v, want %q", tc.ip, tc.from, tc.to, got, ok, tc.want)
		}
	}
}

func TestRecreated(t *testing.T) {
	live := svc("a", "web", v4v6, "10.96.0.10", "fd00:10:96::10")
	live.UID, live.ResourceVersion, live.Generation = "u1", "42", 3
	live.Labels = map[string]string{"app": "web"}
	live.Annotations = map[string]string{"note": "x"}
	live.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
	live.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	live.Spec.Selector = map[string]string{"app": "web"}
	live.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080}}
	live.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}
	got := Recreated(&live, []string{"10.100.0.10", "fd00:10:96::10"})
	if got.UID != "" || got.ResourceVersion != "" || got.Generation != 0 || got.Finalizers != nil || got.ManagedFields != nil || len(got.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("server-set fields kept: %+v", got.ObjectMeta)
	}
	if got.Labels["app"] != "web" || got.Annotations["note"] != "x" || got.Spec.Selector["app"] != "web" || got.Spec.Ports[0].NodePort != 30080 || *got.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack {
		t.Errorf("user fields lost: %+v", got)
	}
	if got.Spec.ClusterIP != "10.100.0.10" || !reflect.DeepEqual(got.Spec.ClusterIPs, []string{"10.100.0.10", "fd00:10:96::10"}) {
		t.Errorf("clusterIPs %v %v", got.Spec.ClusterIP, got.Spec.ClusterIPs)
	}
	live.Labels["app"] = "changed"
	if got.Labels["app"] != "web" {
		t.Error("labels shared with the live object")
	}
	if got := Recreated(&live, []string{"", "fd00:10:96::10"}); got.Spec.ClusterIP != "" || got.Spec.ClusterIPs != nil {
		t.Errorf("leading empty: %v %v", got.Spec.ClusterIP, got.Spec.ClusterIPs)
	}
	if got := Recreated(&live, []string{"10.100.0.10", ""}); !reflect.DeepEqual(got.Spec.ClusterIPs, []string{"10.100.0.10"}) {
		t.Errorf("trailing empty: %v", got.Spec.ClusterIPs)
	}
}

func TestPoolEditIdempotent(t *testing.T) {
	e := &PoolEdit{Materialize: &alloc.PoolSpec{Name: "static-band", Addresses: alloc.FamilyAddresses{IPv4: []string{"10.96.0.1-10.96.1.0"}}},
		Pool: "new", Add: alloc.FamilyAddresses{IPv4: []string{"10.100.0.1-10.100.1.0"}}, Drain: []string{"static-band"}, DefaultPool: "new"}
	once, changed, err := e.ApplyTo(nil)
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	twice, changed, err := e.ApplyTo(once)
	if err != nil || changed || !reflect.DeepEqual(once, twice) {
		t.Errorf("second application changed=%v err=%v\n%+v\n%+v", changed, err, once, twice)
	}
	if once.DefaultPool != "new" || once.Pools[0].State != alloc.PoolDraining || len(once.Pools) != 2 {
		t.Errorf("doc %+v", once)
	}
	if _, _, err := (&PoolEdit{Drain: []string{"nope"}}).ApplyTo(once); err == nil {
		t.Error("draining an unknown pool accepted")
	}
}

// TestPlanDualToSingleRemovesFamily: after the downgrades, the removed
// family leaves the pools (gated on no Service holding one of its
// addresses), a ServiceCIDR of only that family is deleted, a dual-stack one
// is replaced by one with the remaining ranges (ranges cannot be edited)
// and then deleted, the default one is left to the operator, a Terminating
// one to the controller. Both directions, both primaries.
func TestPlanDualToSingleRemovesFamily(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		def                       []string
		extraOnly, extraDual      []string
		remove                    corev1.IPFamily
		doc                       string
		wantPools                 alloc.FamilyAddresses
		wantKeep, wantUnusedOnDel []string
	}{
		{
			name: "IPv4 primary, remove IPv6", def: []string{"10.96.0.0/16", "fd00:10:96::/108"},
			extraOnly: []string{"fd00:20::/108"}, extraDual: []string{"10.97.0.0/24", "fd00:30::/108"}, remove: corev1.IPv6Protocol,
			doc: `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses:
    ipv4: [10.96.0.1-10.96.1.0]
    ipv6: [fd00:10:96::1-fd00:10:96::100]
- name: v6only
  addresses:
    ipv6: [fd00:20::1-fd00:20::10]
`,
			wantPools: alloc.FamilyAddresses{IPv4: []string{"10.96.0.1-10.96.1.0"}}, wantKeep: []string{"10.97.0.0/24"}, wantUnusedOnDel: []string{"fd00:30::/108"},
		},
		{
			name: "IPv6 primary, remove IPv4", def: []string{"fd00:10:96::/108", "10.96.0.0/16"},
			extraOnly: []string{"10.98.0.0/24"}, extraDual: []string{"fd00:30::/108", "10.97.0.0/24"}, remove: corev1.IPv4Protocol,
			doc: `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses:
    ipv4: [10.96.0.1-10.96.1.0]
    ipv6: [fd00:10:96::1-fd00:10:96::100]
- name: v4only
  addresses:
    ipv4: [10.98.0.1-10.98.0.10]
`,
			wantPools: alloc.FamilyAddresses{IPv6: []string{"fd00:10:96::1-fd00:10:96::100"}}, wantKeep: []string{"fd00:30::/108"}, wantUnusedOnDel: []string{"10.97.0.0/24"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			terminating := scidr("going", tc.extraOnly[0])
			terminating.Name = "a-going"
			now := metav1.Now()
			terminating.DeletionTimestamp = &now
			cidrs := []networkingv1.ServiceCIDR{scidr("kubernetes", tc.def...), terminating, scidr("dual", tc.extraDual...), scidr("only", tc.extraOnly...)}
			s := snapshot(t, tc.doc, cidrs)
			p, err := BuildPlan(s, DualToSingle, Options{Family: tc.remove})
			if err != nil {
				t.Fatal(err)
			}
			want := []Action{ActEditPools, ActCreateServiceCIDR, ActWaitReady, ActDeleteServiceCIDR, ActDeleteServiceCIDR}
			if !reflect.DeepEqual(actions(p), want) {
				t.Fatalf("steps %v, want %v", actions(p), want)
			}
			next, _, err := p.Steps[0].Pools.ApplyTo(s.Config)
			if err != nil || len(next.Pools) != 1 || !slices.Equal(next.Pools[0].Addresses.IPv4, tc.wantPools.IPv4) || !slices.Equal(next.Pools[0].Addresses.IPv6, tc.wantPools.IPv6) || next.DefaultPool != "general" {
				t.Errorf("pools after the edit: %+v %v", next, err)
			}
			// Gated on every range of the family, the default's included.
			if u := p.Steps[0].Unused; len(u) != 3 || u[0] != tc.def[1] {
				t.Errorf("pool step gated on %v", u)
			}
			if c := p.Steps[1].ServiceCIDR; c.Name != "dual-"+strings.ToLower(string(otherFamily(tc.remove))) || !reflect.DeepEqual(c.CIDRs, tc.wantKeep) {
				t.Errorf("replacement %+v", c)
			}
			if d := p.Steps[3]; d.ServiceCIDR.Name != "dual" || !reflect.DeepEqual(d.Unused, tc.wantUnusedOnDel) {
				t.Errorf("delete %+v", d)
			}
			if d := p.Steps[4]; d.ServiceCIDR.Name != "only" || !reflect.DeepEqual(d.Unused, tc.extraOnly) {
				t.Errorf("delete %+v", d)
			}
			if !strings.Contains(strings.Join(p.Notes, "\n"), "ServiceCIDR kubernetes keeps "+tc.def[1]) {
				t.Errorf("notes %v", p.Notes)
			}
			// After a partial run (replacement created, pools edited, the
			// dual one Terminating) only the remaining delete is left.
			s.Config = next
			s.ServiceCIDRs[2].DeletionTimestamp = &now
			s.ServiceCIDRs = append(s.ServiceCIDRs, scidr("dual-"+strings.ToLower(string(otherFamily(tc.remove))), tc.wantKeep...))
			p, err = BuildPlan(s, DualToSingle, Options{Family: tc.remove})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(actions(p), []Action{ActDeleteServiceCIDR}) || p.Steps[0].ServiceCIDR.Name != "only" {
				t.Errorf("re-plan: %v", actions(p))
			}
		})
	}
	// A replacement name taken by an object with other ranges is refused.
	s := snapshot(t, "", []networkingv1.ServiceCIDR{scidr("kubernetes", "10.96.0.0/16", "fd00:10:96::/108"), scidr("dual", "10.97.0.0/24", "fd00:30::/108"), scidr("dual-ipv4", "10.99.0.0/24")})
	if _, err := BuildPlan(s, DualToSingle, Options{Family: "IPv6"}); err == nil || !strings.Contains(err.Error(), "shrinking ServiceCIDR dual") {
		t.Errorf("taken replacement name: %v", err)
	}
}

func TestFirstFreeAfterBand(t *testing.T) {
	h := func(ips ...string) map[netip.Addr]string {
		m := map[netip.Addr]string{}
		for _, ip := range ips {
			m[netip.MustParseAddr(ip)] = "x/y"
		}
		return m
	}
	for _, tc := range []struct {
		prefix string
		held   map[netip.Addr]string
		want   string // "" = none
	}{
		{"10.100.0.0/20", h(), "10.100.1.1"},                           // band 10.100.0.1-10.100.1.0
		{"10.100.0.0/20", h("10.100.1.1", "10.100.1.2"), "10.100.1.3"}, // held ones skipped
		{"10.0.0.0/28", h("10.0.0.1"), "10.0.0.2"},                     // no band: from the first host
		{"10.0.0.0/30", h("10.0.0.1", "10.0.0.2"), ""},                 // full (network and broadcast never)
		{"fd00::/108", h(), "fd00::101"},                               // band fd00::1-fd00::100
		{"fd00::/124", h("fd00::1"), "fd00::2"},
		{"fd00::/126", h("fd00::1", "fd00::2", "fd00::3"), ""},
	} {
		got, ok := firstFreeAfterBand(netip.MustParsePrefix(tc.prefix), tc.held)
		if (tc.want == "") == ok || ok && got.String() != tc.want {
			t.Errorf("%s: %v %v, want %q", tc.prefix, got, ok, tc.want)
		}
	}
}
