package ops

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
)

const statusPools = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses:
    ipv4: ["10.96.0.16/28"]
    ipv6: ["fd00:10:96::100-fd00:10:96::1ff"]
- name: old
  state: draining
  addresses: {ipv4: ["10.96.0.40-10.96.0.49"]}
`

// TestStatus: pools ConfigMap and reservations written through the
// allocator's ConfigMap store (what the webhook writes), Services created in
// and out of the pools; `status -o json` must count them, and the table
// must show them.
func TestStatus(t *testing.T) {
	c := newCluster(t, "status", framework.DualStackCIDRs, false)
	cl := c.env.Client
	if _, err := cl.CoreV1().ConfigMaps(webhookNS).Create(c.ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ops.DefaultPoolsConfigMap},
		Data:       map[string]string{alloc.ConfigMapKey: statusPools},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := alloc.ParseConfig([]byte(statusPools))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := alloc.Compile(cfg, c.env.ServiceCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	store, err := configmap.NewForConfig(c.env.Config, configmap.Options{Namespace: webhookNS})
	if err != nil {
		t.Fatal(err)
	}
	// Start's ctx is the informer's lifetime; Shutdown waits for it to end.
	sctx, stop := context.WithCancel(c.ctx)
	defer func() { stop(); store.Shutdown() }()
	if err := store.Start(sctx); err != nil {
		t.Fatal(err)
	}
	a, err := alloc.New(store, pools, alloc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := c.namespace("status", nil)
	dual := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	// web: reserved and created with its pins, then confirmed (bound).
	r, err := a.Reserve(c.ctx, alloc.Request{Owner: alloc.Owner{Namespace: ns, Name: "web"}, Families: dual})
	if err != nil {
		t.Fatal(err)
	}
	web := c.service(ns, "web", corev1.IPFamilyPolicyRequireDualStack, dual, r.IPs[0].String(), r.IPs[1].String())
	for _, ip := range r.IPs {
		if _, err := a.Confirm(c.ctx, ip, alloc.Owner{Namespace: ns, Name: "web", UID: string(web.UID)}); err != nil {
			t.Fatal(err)
		}
	}
	// pending: reserved, Service never created.
	if _, err := a.Reserve(c.ctx, alloc.Request{Owner: alloc.Owner{Namespace: ns, Name: "pending"}, Families: []corev1.IPFamily{corev1.IPv4Protocol}}); err != nil {
		t.Fatal(err)
	}
	// gone: reserved, bound, released (sticky).
	g, err := a.Reserve(c.ctx, alloc.Request{Owner: alloc.Owner{Namespace: ns, Name: "gone"}, Families: []corev1.IPFamily{corev1.IPv4Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Confirm(c.ctx, g.IPs[0], alloc.Owner{Namespace: ns, Name: "gone", UID: "u-gone"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(c.ctx, g.IPs[0], alloc.Owner{Namespace: ns, Name: "gone", UID: "u-gone"}); err != nil {
		t.Fatal(err)
	}
	// unrecorded: inside the pool, no reservation (a pin not imported yet).
	c.service(ns, "unrecorded", corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{corev1.IPv4Protocol}, "10.96.0.30")
	// outside: an address of no pool.
	c.service(ns, "outside", corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{corev1.IPv6Protocol}, "fd00:10:96::5:5")
	if web.Spec.ClusterIPs[0] != "10.96.0.16" || r.IPs[1] != netip.MustParseAddr("fd00:10:96::100") {
		t.Fatalf("unexpected pins %v", web.Spec.ClusterIPs)
	}

	out, _ := c.run(false, "status", "-o", "json")
	var st ops.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	fam := map[string]ops.FamilyStatus{}
	for _, p := range st.Pools {
		for _, f := range p.Families {
			fam[p.Name+"/"+f.Family] = f
		}
	}
	// general IPv4: 10.96.0.16-31 = 16; web .16 bound, pending .17, gone .18
	// sticky; .30 unrecorded; lowest free .19.
	want := map[string]ops.FamilyStatus{
		"general/IPv4": {Family: "IPv4", Size: "16", Reserved: 3, Pending: 1, Bound: 1, Sticky: 1, Unrecorded: 1, Free: "12", LowestFree: "10.96.0.19"},
		"general/IPv6": {Family: "IPv6", Size: "256", Reserved: 1, Bound: 1, Free: "255", LowestFree: "fd00:10:96::101"},
		"old/IPv4":     {Family: "IPv4", Size: "10", Free: "10", LowestFree: "10.96.0.40"},
	}
	if len(fam) != len(want) {
		t.Errorf("families %v", fam)
	}
	for k, w := range want {
		g := fam[k]
		g.Ranges = nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %+v\nwant %+v", k, g, w)
		}
	}
	var outside []string
	for _, o := range st.Outside {
		outside = append(outside, o.Namespace+"/"+o.Name+"="+o.IP)
	}
	// default/kubernetes (10.96.0.1 and fd00:10:96::1) lies outside these pools too.
	wantOut := []string{"default/kubernetes=10.96.0.1", ns + "/outside=fd00:10:96::5:5"}
	if strings.Join(outside, " ") != strings.Join(wantOut, " ") {
		t.Errorf("outside: %v, want %v", outside, wantOut)
	}
	if len(st.ServiceCIDRs) != 1 || st.ServiceCIDRs[0].Name != "kubernetes" || st.ServiceCIDRs[0].Ready != "True" {
		t.Errorf("serviceCIDRs %+v", st.ServiceCIDRs)
	}

	table, _ := c.run(false, "status")
	for _, s := range []string{"general (default)", "10.96.0.19", "old", "draining", ns + "/outside", "fd00:10:96::5:5"} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q", s)
		}
	}
	yml, _ := c.run(false, "status", "-o", "yaml")
	if !strings.Contains(yml, "lowestFree: 10.96.0.19") {
		t.Errorf("yaml lacks lowestFree:\n%s", yml)
	}
	if _, errOut := c.run(true, "status", "-o", "xml"); !strings.Contains(errOut, "want table, yaml or json") {
		t.Errorf("-o xml: %s", errOut)
	}
	statusPoolsSource(t, c)
}

// statusPoolsSource: status counts against the pools the replicas pin from.
// With the pools ConfigMap absent, garbage or not compiling, that is the
// record of the last document they applied (<pools>-applied, written by the
// replicas; here by hand); without a record, an absent ConfigMap is the
// static band and a garbage one an error.
func statusPoolsSource(t *testing.T, c *cluster) {
	cms := c.env.Client.CoreV1().ConfigMaps(webhookNS)
	setPools := func(doc *string) {
		t.Helper()
		_ = cms.Delete(c.ctx, ops.DefaultPoolsConfigMap, metav1.DeleteOptions{})
		if doc == nil {
			return
		}
		if _, err := cms.Create(c.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ops.DefaultPoolsConfigMap},
			Data: map[string]string{alloc.ConfigMapKey: *doc}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	record := alloc.AppliedConfigMapName(ops.DefaultPoolsConfigMap)
	if _, err := cms.Create(c.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: record},
		Data: map[string]string{alloc.ConfigMapKey: statusPools}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(statusPools, "10.96.0.16/28", "10.96.0.64/28", 1)
	outside := strings.Replace(statusPools, "10.96.0.16/28", "10.200.0.0/28", 1)
	garbage, same := "pools: [", statusPools
	for _, tc := range []struct {
		name         string
		pools        *string
		deleteRecord bool
		source       string // "" : status must fail
		note         string
		generalV4    string // first range of pool general, IPv4
	}{
		{"same as the record", &same, false, ops.PoolsFromConfigMap, "", "10.96.0.16-10.96.0.31"},
		{"edited, not applied yet", &edited, false, ops.PoolsFromConfigMap, "differs from the last document the replicas applied", "10.96.0.64-10.96.0.79"},
		{"deleted", nil, false, ops.PoolsFromRecord, "absent; the replicas pin from the last document applied from it, recorded in " + record, "10.96.0.16-10.96.0.31"},
		{"garbage", &garbage, false, ops.PoolsFromRecord, "the replicas pin from the last document applied from it", "10.96.0.16-10.96.0.31"},
		{"outside every ServiceCIDR", &outside, false, ops.PoolsFromRecord, "outside every ServiceCIDR", "10.96.0.16-10.96.0.31"},
		{"deleted, no record", nil, true, ops.PoolsFromStaticBand, "", ""},
		{"garbage, no record", &garbage, true, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setPools(tc.pools)
			if tc.deleteRecord {
				_ = cms.Delete(c.ctx, record, metav1.DeleteOptions{})
			}
			out, errOut := c.run(tc.source == "", "status", "-o", "json")
			if tc.source == "" {
				if !strings.Contains(errOut, "pools ConfigMap") && !strings.Contains(errOut, ops.DefaultPoolsConfigMap) {
					t.Errorf("status without a usable document or record: %s", errOut)
				}
				return
			}
			var st ops.Status
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatal(err)
			}
			if st.PoolsSource != tc.source || !strings.Contains(st.PoolsNote, tc.note) || (tc.note == "" && st.PoolsNote != "") {
				t.Errorf("source %q note %q, want %q and a note with %q", st.PoolsSource, st.PoolsNote, tc.source, tc.note)
			}
			var general string
			for _, p := range st.Pools {
				if p.Name == "general" && len(p.Families) > 0 && len(p.Families[0].Ranges) > 0 {
					general = p.Families[0].Ranges[0]
				}
			}
			if general != tc.generalV4 {
				t.Errorf("pool general's first IPv4 range %q, want %q (%+v)", general, tc.generalV4, st.Pools)
			}
			if tc.source != ops.PoolsFromConfigMap {
				if table, _ := c.run(false, "status"); !strings.Contains(table, "Pools from: "+tc.source) {
					t.Errorf("table lacks the pools' source:\n%s", table)
				}
			}
		})
	}
}
