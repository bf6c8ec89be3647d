package alloc

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var (
	cidrsV4V6 = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
	cidrsV6V4 = []netip.Prefix{netip.MustParsePrefix("fd00:10:96::/108"), netip.MustParsePrefix("10.96.0.0/16")}
	cidrsV4   = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	cidrsV6   = []netip.Prefix{netip.MustParsePrefix("fd00:10:96::/108")}
	// clusters are the four shapes every table runs against.
	clusters = map[string][]netip.Prefix{"IPv4": cidrsV4, "IPv6": cidrsV6, "IPv4,IPv6": cidrsV4V6, "IPv6,IPv4": cidrsV6V4}
)

const head = "apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\n"

func mustCompile(t *testing.T, doc string, cidrs []netip.Prefix) *Pools {
	t.Helper()
	c, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(c, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		doc  string
		want string // substring of the error, "" for success
	}{
		"minimal document":         {head, ""},
		"wrong apiVersion":         {"apiVersion: v1\nkind: PoolConfig\n", "want apiVersion dualstack-webhook.io/v1alpha1"},
		"wrong kind":               {"apiVersion: dualstack-webhook.io/v1alpha1\nkind: Pools\n", "kind"},
		"misspelt field is caught": {head + "pools:\n- name: a\n  exlude: [10.96.0.1]\n", "exlude"},
		"not YAML":                 {"{", "pools.yaml"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(path, []byte(head+"defaultPool: a\npools:\n- name: a\n  addresses: {ipv4: [10.96.0.10]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(path)
	if err != nil || c.DefaultPool != "a" || len(c.Pools) != 1 {
		t.Fatalf("LoadConfigFile = %+v, %v", c, err)
	}
	cm := &corev1.ConfigMap{Data: map[string]string{ConfigMapKey: head + "pools: []\n"}}
	if c, err := ConfigFromConfigMap(cm); err != nil || len(c.Pools) != 0 {
		t.Fatalf("ConfigFromConfigMap = %+v, %v", c, err)
	}
	if c, err := ConfigFromConfigMap(&corev1.ConfigMap{}); err != nil || c.Kind != ConfigKind {
		t.Fatalf("ConfigFromConfigMap(no key) = %+v, %v", c, err)
	}
}

// TestDefaultPoolIsStaticBand: without pools, each ServiceCIDR's KEP-3070
// band is the default pool, in whatever family order the cluster has.
func TestDefaultPoolIsStaticBand(t *testing.T) {
	for name, cidrs := range clusters {
		t.Run(name, func(t *testing.T) {
			p := mustCompile(t, head, cidrs)
			if p.Default == nil || p.Default.Name != StaticBandPool || len(p.List) != 1 {
				t.Fatalf("default = %+v", p.Default)
			}
			for _, c := range cidrs {
				band, _ := StaticBand(c)
				got := p.Default.Addresses.Ranges(FamilyOf(c.Addr()))
				if len(got) != 1 || got[0] != band {
					t.Errorf("%s: default pool %v, want %s", c, got, band)
				}
			}
			for _, f := range []corev1.IPFamily{v4, v6} {
				want := false
				for _, c := range cidrs {
					want = want || FamilyOf(c.Addr()) == f
				}
				if p.Default.Has(f) != want {
					t.Errorf("Has(%s) = %v, want %v", f, !want, want)
				}
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	tests := map[string]struct {
		pools string
		cidrs []netip.Prefix
		want  []string // every substring must appear
	}{
		"IPv4 malformed address names pool and address": {
			"- name: a\n  addresses: {ipv4: [10.96.0.300]}\n", cidrsV4, []string{`pool "a"`, `"10.96.0.300"`}},
		"IPv6 malformed address names pool and address": {
			"- name: a\n  addresses: {ipv6: [\"fd00::g\"]}\n", cidrsV6, []string{`pool "a"`, `fd00::g`}},
		"IPv6 address listed under ipv4": {
			"- name: a\n  addresses: {ipv4: [\"fd00:10:96::5\"]}\n", cidrsV4V6, []string{`pool "a"`, `addresses.ipv4`, `"fd00:10:96::5" is an IPv6 address`}},
		"IPv4 address listed under ipv6": {
			"- name: a\n  addresses: {ipv6: [10.96.0.5]}\n", cidrsV6V4, []string{`addresses.ipv6`, `"10.96.0.5" is an IPv4 address`}},
		"range mixing families": {
			"- name: a\n  addresses: {ipv4: [\"10.96.0.5-fd00:10:96::5\"]}\n", cidrsV4V6, []string{`mixes IPv4 and IPv6`}},
		"IPv4 overlap between pools": {
			"- name: a\n  addresses: {ipv4: [10.96.0.10-10.96.0.20]}\n- name: b\n  addresses: {ipv4: [10.96.0.16/28]}\n", cidrsV4V6,
			[]string{`pool "b" overlaps pool "a" at 10.96.0.16`}},
		"IPv6 overlap between pools": {
			"- name: a\n  addresses: {ipv6: [\"fd00:10:96::100/120\"]}\n- name: b\n  addresses: {ipv6: [\"fd00:10:96::1ff\"]}\n", cidrsV6V4,
			[]string{`pool "b" overlaps pool "a" at fd00:10:96::1ff`}},
		"IPv4 outside every ServiceCIDR": {
			"- name: a\n  addresses: {ipv4: [10.96.255.250-10.97.0.5]}\n", cidrsV4, []string{`pool "a"`, `10.97.0.0 is outside every ServiceCIDR (10.96.0.0/16)`}},
		"IPv6 outside every ServiceCIDR": {
			"- name: a\n  addresses: {ipv6: [\"fd00:10:97::1\"]}\n", cidrsV4V6, []string{`fd00:10:97::1 is outside every ServiceCIDR`}},
		"IPv6 pool on an IPv4-only cluster": {
			"- name: a\n  addresses: {ipv6: [\"fd00:10:96::1\"]}\n", cidrsV4, []string{`outside every ServiceCIDR`}},
		"IPv4 CIDR pool holding the network address": {
			"- name: a\n  addresses: {ipv4: [10.96.0.0/28]}\n", cidrsV4V6, []string{`10.96.0.0, the network address of ServiceCIDR 10.96.0.0/16`, `exclude`}},
		"IPv4 pool holding the broadcast address": {
			"- name: a\n  addresses: {ipv4: [10.96.255.240/28]}\n", cidrsV4, []string{`10.96.255.255, the broadcast address`}},
		"IPv6 CIDR pool holding the network address": {
			"- name: a\n  addresses: {ipv6: [\"fd00:10:96::/120\"]}\n", cidrsV6V4, []string{`fd00:10:96::, the network address`}},
		"everything excluded": {
			"- name: a\n  addresses: {ipv4: [10.96.0.5]}\n  exclude: [10.96.0.0/24]\n", cidrsV4, []string{`pool "a": has no usable address`}},
		"duplicate names":  {"- name: a\n  addresses: {ipv4: [10.96.0.5]}\n- name: a\n  addresses: {ipv4: [10.96.0.6]}\n", cidrsV4, []string{`pool "a": defined twice`}},
		"invalid name":     {"- name: A_B\n  addresses: {ipv4: [10.96.0.5]}\n", cidrsV4, []string{`invalid name`}},
		"missing name":     {"- addresses: {ipv4: [10.96.0.5]}\n", cidrsV4, []string{`pools[0]: name is required`}},
		"unknown strategy": {"- name: a\n  strategy: random\n  addresses: {ipv4: [10.96.0.5]}\n", cidrsV4, []string{`unknown strategy "random"`}},
		"unknown state":    {"- name: a\n  state: paused\n  addresses: {ipv6: [\"fd00:10:96::5\"]}\n", cidrsV6, []string{`unknown state "paused"`}},
		"namespace twice":  {"- name: a\n  namespaces: [web]\n  addresses: {ipv4: [10.96.0.5]}\n- name: b\n  namespaces: [web]\n  addresses: {ipv4: [10.96.0.6]}\n", cidrsV4, []string{`namespace "web" is already selected by pool "a"`}},
		"bad selector":     {"- name: a\n  namespaceSelector: {matchExpressions: [{key: k, operator: Bogus}]}\n  addresses: {ipv4: [10.96.0.5]}\n", cidrsV4, []string{`namespaceSelector`}},
		"unknown default":  {"- name: a\n  addresses: {ipv4: [10.96.0.5]}\n", cidrsV4, nil}, // fixed below with defaultPool
		"several problems": {
			"- name: a\n  addresses: {ipv4: [10.96.0.300, 10.97.0.1]}\n", cidrsV4, []string{`10.96.0.300`, `10.97.0.1 is outside`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			doc := head + "pools:\n" + tc.pools
			if tc.want == nil {
				doc = head + "defaultPool: nope\npools:\n" + tc.pools
				tc.want = []string{`defaultPool "nope": no such pool`}
			}
			c, err := ParseConfig([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Compile(c, tc.cidrs)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile = %v, want a *ConfigError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	doc := head + `defaultPool: general
pools:
- name: general
  addresses:
    ipv4: ["10.96.0.16/28", "10.96.0.40-10.96.0.60", "10.96.0.99"]
    ipv6: ["fd00:10:96::100-fd00:10:96::1ff"]
  exclude: ["10.96.0.50", "fd00:10:96::180/122"]
- name: payments
  strategy: hash
  state: draining
  addresses: {ipv4: ["10.96.0.0/24"]}
  exclude: ["10.96.0.0", "10.96.0.16/28", "10.96.0.40-10.96.0.60", "10.96.0.99"]
`
	for name, cidrs := range map[string][]netip.Prefix{"IPv4,IPv6": cidrsV4V6, "IPv6,IPv4": cidrsV6V4} {
		t.Run(name, func(t *testing.T) {
			p := mustCompile(t, doc, cidrs)
			g, _ := p.Get("general")
			if got := g.Addresses.Size(v4).Int64(); got != 16+21-1+1 {
				t.Errorf("general IPv4 size = %d, want 37", got)
			}
			if got := g.Addresses.Size(v6).Int64(); got != 256-64 {
				t.Errorf("general IPv6 size = %d, want 192", got)
			}
			pay, _ := p.Get("payments")
			if pay.Strategy != StrategyHash || pay.State != PoolDraining || pay.Has(v6) {
				t.Errorf("payments = %+v", pay)
			}
			if g.Strategy != StrategyLowest || g.State != PoolActive {
				t.Errorf("defaults not applied: %+v", g)
			}
			if p.PoolOf(ip("10.96.0.50")) != nil {
				t.Error("an excluded address belongs to a pool")
			}
			if p.PoolOf(ip("10.96.0.51")) != g || p.PoolOf(ip("10.96.0.200")) != pay {
				t.Error("PoolOf picks the wrong pool")
			}
		})
	}
}

func TestSelect(t *testing.T) {
	doc := head + `defaultPool: general
pools:
- name: general
  addresses: {ipv4: ["10.96.0.10-10.96.0.20"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
- name: team
  namespaces: [payments]
  addresses: {ipv4: ["10.96.0.30-10.96.0.40"]}
- name: labelled
  namespaceSelector: {matchLabels: {tier: gold}}
  addresses: {ipv6: ["fd00:10:96::30-fd00:10:96::40"]}
- name: labelled-too
  namespaceSelector: {matchExpressions: [{key: tier, operator: Exists}]}
  addresses: {ipv4: ["10.96.0.50"]}
- name: edge
  serviceSelector: {matchLabels: {role: edge}}
  addresses: {ipv4: ["10.96.0.60-10.96.0.69"], ipv6: ["fd00:10:96::60-fd00:10:96::69"]}
- name: shop-api
  namespaces: [shop]
  serviceSelector: {matchLabels: {app: api}}
  addresses: {ipv4: ["10.96.0.70-10.96.0.79"], ipv6: ["fd00:10:96::70-fd00:10:96::79"]}
`
	gold := map[string]string{"tier": "gold"}
	tests := map[string]struct {
		ns       string
		ann      map[string]string
		nsLabels map[string]string
		labels   map[string]string
		want     string
		err      string // substring of the error
	}{
		"annotation wins over namespace":           {ns: "payments", ann: map[string]string{PoolAnnotation: "labelled"}, nsLabels: gold, want: "labelled"},
		"annotation naming an unknown pool errors": {ns: "web", ann: map[string]string{PoolAnnotation: "nope"}, err: `"nope"`},
		"annotation of an open pool from anywhere": {ns: "web", ann: map[string]string{PoolAnnotation: "general"}, want: "general"},
		"annotation of a restricted pool from outside its namespaces is denied": {ns: "shop", ann: map[string]string{PoolAnnotation: "team"},
			err: `pool "team" serves only namespaces [payments]; shop/web is not one of them`},
		"annotation of a selector pool from an unlabelled namespace is denied": {ns: "shop", ann: map[string]string{PoolAnnotation: "labelled"},
			err: `pool "labelled" serves only namespaces matching tier=gold; shop/web is not one of them`},
		"annotation of a service-selector pool without the label is denied": {ns: "shop", ann: map[string]string{PoolAnnotation: "edge"}, labels: map[string]string{"role": "db"},
			err: `pool "edge" serves only Services matching role=edge; shop/web is not one of them`},
		"annotation of a pool needing both, in the namespace without the label, is denied": {ns: "shop", ann: map[string]string{PoolAnnotation: "shop-api"},
			err: `pool "shop-api" serves only Services matching app=api in namespaces [shop]; shop/web is not one of them`},
		"annotation of a pool needing both, with both": {ns: "shop", ann: map[string]string{PoolAnnotation: "shop-api"}, labels: map[string]string{"app": "api"}, want: "shop-api"},
		"namespace list": {ns: "payments", nsLabels: gold, want: "team"},
		"label selector": {ns: "web", nsLabels: gold, want: "labelled"},
		"first matching selector in document order":        {ns: "web", nsLabels: map[string]string{"tier": "silver"}, want: "labelled-too"},
		"service selector alone selects by Service labels": {ns: "web", labels: map[string]string{"role": "edge"}, want: "edge"},
		"namespace plus service selector: both match":      {ns: "shop", labels: map[string]string{"app": "api"}, want: "shop-api"},
		"namespace plus service selector: label missing":   {ns: "shop", labels: map[string]string{"app": "ui"}, want: "general"},
		"namespace plus service selector: other namespace": {ns: "web", labels: map[string]string{"app": "api"}, want: "general"},
		"default pool":     {ns: "web", nsLabels: map[string]string{"other": "x"}, want: "general"},
		"no labels at all": {ns: "web", want: "general"},
	}
	for cname, cidrs := range clusters {
		if len(cidrs) < 2 {
			continue // the pools have addresses of both families
		}
		p := mustCompile(t, doc, cidrs)
		for name, tc := range tests {
			t.Run(cname+"/"+name, func(t *testing.T) {
				got, err := p.Select(Subject{Namespace: tc.ns, Name: "web", NamespaceLabels: tc.nsLabels, Labels: tc.labels}, tc.ann)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("err = %v, want it to say %q", err, tc.err)
					}
					var access *ErrPoolAccess
					if errors.As(err, &access) == errors.Is(err, ErrUnknownPool) {
						t.Fatalf("err = %v: want exactly one of ErrUnknownPool, *ErrPoolAccess", err)
					}
					return
				}
				if err != nil || got == nil || got.Name != tc.want {
					t.Fatalf("Select = %v, %v; want %s", got, err, tc.want)
				}
			})
		}
	}
	// Without a defaultPool, unselected Services are not pinned.
	p := mustCompile(t, head+"pools:\n- name: a\n  namespaces: [x]\n  addresses: {ipv4: [10.96.0.5]}\n", cidrsV4)
	if got, err := p.Select(Subject{Namespace: "y", Name: "web"}, nil); got != nil || err != nil {
		t.Errorf("Select without default = %v, %v; want nil, nil", got, err)
	}
	// The implicit static band is open to everyone, by annotation too.
	band := mustCompile(t, head, cidrsV4V6)
	if got, err := band.Select(Subject{Namespace: "y", Name: "web"}, map[string]string{PoolAnnotation: StaticBandPool}); err != nil || got.Name != StaticBandPool {
		t.Errorf("static band by annotation = %v, %v", got, err)
	}
}

func TestCompileAccessRules(t *testing.T) {
	tests := map[string]struct {
		doc  string
		want string // substring of the error, "" for success
	}{
		"restricted default pool": {head + "defaultPool: a\npools:\n- name: a\n  namespaces: [x]\n  addresses: {ipv4: [10.96.0.5]}\n",
			`defaultPool "a" serves only namespaces [x]: the default pool serves every Service`},
		"empty namespaceSelector": {head + "pools:\n- name: a\n  namespaceSelector: {}\n  addresses: {ipv4: [10.96.0.5]}\n",
			`pool "a": namespaceSelector is empty`},
		"empty serviceSelector": {head + "pools:\n- name: a\n  serviceSelector: {matchLabels: {}}\n  addresses: {ipv4: [10.96.0.5]}\n",
			`pool "a": serviceSelector is empty`},
		"bad selector operator": {head + "pools:\n- name: a\n  serviceSelector: {matchExpressions: [{key: k, operator: Near}]}\n  addresses: {ipv4: [10.96.0.5]}\n",
			`pool "a": serviceSelector:`},
		"unknown allowExplicitFrom": {head + "pools:\n- name: a\n  namespaces: [x]\n  allowExplicitFrom: everyone\n  addresses: {ipv4: [10.96.0.5]}\n",
			`unknown allowExplicitFrom "everyone"`},
		"allowExplicitFrom any":      {head + "pools:\n- name: a\n  namespaces: [x]\n  allowExplicitFrom: any\n  addresses: {ipv4: [10.96.0.5]}\n", ""},
		"allowExplicitFrom selected": {head + "pools:\n- name: a\n  namespaces: [x]\n  allowExplicitFrom: selected\n  addresses: {ipv4: [10.96.0.5]}\n", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Compile(c, cidrsV4)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestValidateAccessChange(t *testing.T) {
	before := head + `pools:
- name: pay
  namespaces: [payments]
  addresses: {ipv4: ["10.96.0.10-10.96.0.20"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
- name: edge
  serviceSelector: {matchLabels: {role: edge}}
  addresses: {ipv4: ["10.96.0.30-10.96.0.40"], ipv6: ["fd00:10:96::30-fd00:10:96::40"]}
`
	live := map[string]Subject{
		"payments/api": {Namespace: "payments", Name: "api", NamespaceLabels: map[string]string{"team": "payments"}},
		"web/lb":       {Namespace: "web", Name: "lb", Labels: map[string]string{"role": "edge"}},
		"shop/stray":   {Namespace: "shop", Name: "stray"}, // imported while the webhook was down
	}
	subjects := func(o Owner) (Subject, bool) { s, ok := live[o.Namespace+"/"+o.Name]; return s, ok }
	for cname, cidrs := range clusters {
		if len(cidrs) < 2 {
			continue
		}
		// Each family's address of each Service, so both families are checked.
		var held []Reservation
		for _, fam := range []struct{ pay, edge, stray string }{{"10.96.0.15", "10.96.0.35", "10.96.0.16"}, {"fd00:10:96::15", "fd00:10:96::35", "fd00:10:96::16"}} {
			held = append(held,
				Reservation{IP: ip(fam.pay), Pool: "pay", Owner: Owner{Namespace: "payments", Name: "api"}, State: StateBound},
				Reservation{IP: ip(fam.edge), Pool: "edge", Owner: Owner{Namespace: "web", Name: "lb"}, State: StateBound},
				Reservation{IP: ip(fam.stray), Pool: "pay", Owner: Owner{Namespace: "shop", Name: "stray"}, State: StateBound},
				Reservation{IP: ip(fam.stray).Next(), Pool: "pay", Owner: Owner{Namespace: "gone", Name: "old"}, State: StateSticky},
			)
		}
		prev := mustCompile(t, before, cidrs)
		tests := map[string]struct {
			after string
			want  []string
		}{
			"unchanged": {before, nil},
			"namespace list replaced by a selector the holder matches": {strings.Replace(before, "namespaces: [payments]", "namespaceSelector: {matchLabels: {team: payments}}", 1), nil},
			"namespace list narrowed away from the holder": {strings.Replace(before, "namespaces: [payments]", "namespaces: [payments-v2]", 1),
				[]string{`pool "pay": address 10.96.0.15 is bound to payments/api, which the pool would no longer serve (it would serve only namespaces [payments-v2])`, "fd00:10:96::15"}},
			"service selector added that the holder lacks": {strings.Replace(before, "namespaces: [payments]", "namespaces: [payments]\n  serviceSelector: {matchLabels: {app: db}}", 1),
				[]string{`address 10.96.0.15 is bound to payments/api`, `Services matching app=db in namespaces [payments]`}},
			"service selector changed":                            {strings.Replace(before, "role: edge", "role: ingress", 1), []string{`address 10.96.0.35 is bound to web/lb`}},
			"narrowed but allowExplicitFrom any keeps the holder": {strings.Replace(before, "namespaces: [payments]", "namespaces: [payments-v2]\n  allowExplicitFrom: any", 1), nil},
			"opening a pool":                                      {strings.Replace(before, "  serviceSelector: {matchLabels: {role: edge}}\n", "", 1), nil},
		}
		for name, tc := range tests {
			t.Run(cname+"/"+name, func(t *testing.T) {
				err := ValidateAccessChange(prev, mustCompile(t, tc.after, cidrs), held, subjects)
				if len(tc.want) == 0 {
					if err != nil {
						t.Fatalf("ValidateAccessChange = %v, want nil", err)
					}
					return
				}
				if err == nil {
					t.Fatal("a change leaving a bound Service outside its pool was accepted")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "shop/stray") || strings.Contains(err.Error(), "gone/old") {
					t.Errorf("error %q blames a holder the old pools did not serve either, or a sticky one", err)
				}
			})
		}
	}
}

func TestValidateChange(t *testing.T) {
	before := head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.10-10.96.0.20"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
- name: b
  addresses: {ipv4: ["10.96.0.30-10.96.0.40"], ipv6: ["fd00:10:96::30-fd00:10:96::40"]}
`
	held := []Reservation{
		{IP: ip("10.96.0.15"), Pool: "a", Owner: Owner{Namespace: "web", Name: "v4"}, State: StateBound},
		{IP: ip("fd00:10:96::15"), Pool: "a", Owner: Owner{Namespace: "web", Name: "v6"}, State: StateSticky},
		{IP: ip("10.96.7.7"), Pool: "", Owner: Owner{Namespace: "web", Name: "outside"}, State: StateBound},
	}
	tests := map[string]struct {
		after string
		want  []string // "" list = accepted
	}{
		"growing a pool is fine": {head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.10-10.96.0.25"], ipv6: ["fd00:10:96::10-fd00:10:96::25"]}
`, nil},
		"shrinking around the used addresses is fine": {head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.15"], ipv6: ["fd00:10:96::15"]}
`, nil},
		"IPv4 in-use address removed": {head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.10-10.96.0.14"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
`, []string{`pool "a": address 10.96.0.15 is bound by web/v4 and would leave every pool`}},
		"IPv6 in-use address excluded": {head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.10-10.96.0.20"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
  exclude: ["fd00:10:96::15"]
`, []string{`address fd00:10:96::15 is sticky by web/v6`}},
		"whole pool deleted": {head + `pools:
- name: b
  addresses: {ipv4: ["10.96.0.30-10.96.0.40"]}
`, []string{`10.96.0.15`, `fd00:10:96::15`}},
		"in-use address moved to another pool": {head + `pools:
- name: a
  addresses: {ipv4: ["10.96.0.10-10.96.0.14"], ipv6: ["fd00:10:96::10-fd00:10:96::20"]}
- name: c
  addresses: {ipv4: ["10.96.0.15-10.96.0.16"]}
`, []string{`10.96.0.15 is bound by web/v4 and would move to pool "c"`}},
	}
	for cname, cidrs := range map[string][]netip.Prefix{"IPv4,IPv6": cidrsV4V6, "IPv6,IPv4": cidrsV6V4} {
		mustCompile(t, before, cidrs)
		for name, tc := range tests {
			t.Run(cname+"/"+name, func(t *testing.T) {
				err := ValidateChange(mustCompile(t, tc.after, cidrs), held)
				if len(tc.want) == 0 {
					if err != nil {
						t.Fatalf("ValidateChange = %v, want nil", err)
					}
					return
				}
				if err == nil {
					t.Fatal("ValidateChange accepted a change that orphans an address in use")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
			})
		}
	}
}
