package policy

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// gridFile is the apiserver's own answer to every cell of the CREATE matrix
// (docs/dualstack-rules.md §1.3: 4 cluster shapes × 7 clusterIPs shapes × 4
// policies × 5 ipFamilies), recorded from a real kube-apiserver by the e2e
// grid generator (`make grid`). The engine must give the same outcome for
// every cell: the same resolved fields, or the same field errors in the same
// order.
type gridFile struct {
	Kubernetes string `json:"kubernetes"`
	Clusters   []struct {
		Name  string `json:"name"`
		Range string `json:"serviceClusterIPRange"`
	} `json:"clusters"`
	Cells []struct {
		Cluster string      `json:"cluster"`
		Name    string      `json:"name"`
		Input   createInput `json:"input"`
		Result  *struct {
			Policy            string   `json:"ipFamilyPolicy"`
			Families          []string `json:"ipFamilies"`
			ClusterIPFamilies []string `json:"clusterIPFamilies"`
			ClusterIPCount    int      `json:"clusterIPCount"`
		} `json:"result"`
		Error *struct {
			Code   int `json:"code"`
			Causes []struct {
				Field   string `json:"field"`
				Message string `json:"message"`
			} `json:"causes"`
		} `json:"error"`
	} `json:"cells"`
}

// createInput is the posted spec of one CREATE grid cell.
type createInput struct {
	Policy     *string  `json:"ipFamilyPolicy"`
	Families   []string `json:"ipFamilies"`
	ClusterIP  string   `json:"clusterIP"`
	ClusterIPs []string `json:"clusterIPs"`
	Selector   bool     `json:"selector"`
}

// spec is the Service spec the cell posted.
func (in createInput) spec() spec {
	s := spec{}
	if in.Policy != nil {
		s["ipFamilyPolicy"] = *in.Policy
	}
	if in.Families != nil {
		s["ipFamilies"] = in.Families
	}
	if in.ClusterIP != "" {
		s["clusterIP"] = in.ClusterIP
	}
	if in.ClusterIPs != nil {
		s["clusterIPs"] = in.ClusterIPs
	}
	if in.Selector {
		s["selector"] = map[string]any{"app": "grid"}
	}
	return s
}

func TestCreateGridMatchesAPIServer(t *testing.T) {
	raw, err := os.ReadFile("testdata/create_grid.json")
	if err != nil {
		t.Fatal(err)
	}
	var g gridFile
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cells) != 560 {
		t.Fatalf("grid has %d cells, want the whole 560-cell matrix", len(g.Cells))
	}
	shapeOf := map[string][]corev1.IPFamily{}
	for _, c := range g.Clusters {
		shapeOf[c.Name] = shapes[c.Name]
		if shapeOf[c.Name] == nil {
			t.Fatalf("unknown cluster shape %q", c.Name)
		}
	}
	var accepted, rejected int
	for _, cell := range g.Cells {
		t.Run(cell.Cluster+"/"+cell.Name, func(t *testing.T) {
			s := cell.Input.spec()
			d, err := Evaluate(Input{Families: shapeOf[cell.Cluster], Operation: Create, Object: svcJSON(t, "grid", s)})
			if cell.Error != nil {
				rejected++
				var inv *InvalidError
				if !errors.As(err, &inv) {
					t.Fatalf("apiserver answered %d %v; engine: decision %+v err %v", cell.Error.Code, cell.Error.Causes, d, err)
				}
				if len(inv.Errs) != len(cell.Error.Causes) {
					t.Fatalf("apiserver causes %v; engine %v", cell.Error.Causes, inv.Errs)
				}
				for i, c := range cell.Error.Causes {
					e := inv.Errs[i]
					msg := e.ErrorBody()
					if e.Field != c.Field || msg != c.Message {
						t.Errorf("cause %d: apiserver %s: %s; engine %s: %s", i, c.Field, c.Message, e.Field, msg)
					}
				}
				return
			}
			accepted++
			if err != nil {
				t.Fatalf("apiserver accepted (%+v); engine: %v", cell.Result, err)
			}
			r := cell.Result
			if string(d.Policy) != r.Policy {
				t.Errorf("policy: apiserver %s, engine %s", r.Policy, d.Policy)
			}
			if !slices.Equal(familyStrings(d.Families), r.Families) {
				t.Errorf("families: apiserver %v, engine %v", r.Families, d.Families)
			}
			// The IPs the Service ends with are the given ones plus one
			// per family the engine says must be allocated.
			var got []string
			if len(d.ClusterIPs) == 1 && d.ClusterIPs[0] == none {
				got = []string{"None"}
			} else {
				for _, ip := range d.ClusterIPs {
					got = append(got, string(familyOf(ip)))
				}
				got = append(got, familyStrings(d.Allocate)...)
			}
			if !slices.Equal(got, r.ClusterIPFamilies) || len(got) != r.ClusterIPCount {
				t.Errorf("clusterIP families: apiserver %v, engine given %v + allocate %v", r.ClusterIPFamilies, d.ClusterIPs, d.Allocate)
			}
		})
	}
	if accepted == 0 || rejected == 0 {
		t.Fatalf("grid must hold both accepted (%d) and rejected (%d) cells", accepted, rejected)
	}
	t.Logf("%d cells: %d accepted, %d rejected, all as kube-apiserver %s answered", len(g.Cells), accepted, rejected, g.Kubernetes)
}

func familyStrings(f []corev1.IPFamily) []string {
	out := make([]string, len(f))
	for i, x := range f {
		out[i] = string(x)
	}
	return out
}

// updateGridFile holds the apiserver's answers to PUTs of stored Services
// (6 starting points × 5 policies × 6 families × 3 clusterIPs changes on the
// four cluster shapes), recorded like the CREATE grid.
type updateGridFile struct {
	Kubernetes string `json:"kubernetes"`
	Cells      []struct {
		Cluster string    `json:"cluster"`
		Name    string    `json:"name"`
		From    string    `json:"from"`
		Initial gridInput `json:"initial"`
		Stored  struct {
			Policy     string   `json:"ipFamilyPolicy"`
			Families   []string `json:"ipFamilies"`
			ClusterIPs []string `json:"clusterIPs"`
		} `json:"stored"`
		Request gridInput `json:"request"`
		Result  *struct {
			Policy            string   `json:"ipFamilyPolicy"`
			Families          []string `json:"ipFamilies"`
			ClusterIPs        []string `json:"clusterIPs"`
			ClusterIPFamilies []string `json:"clusterIPFamilies"`
		} `json:"result"`
		Error *gridError `json:"error"`
	} `json:"cells"`
}

type gridInput struct {
	Policy     *string  `json:"ipFamilyPolicy"`
	Families   []string `json:"ipFamilies"`
	ClusterIP  string   `json:"clusterIP"`
	ClusterIPs []string `json:"clusterIPs"`
	Selector   bool     `json:"selector"`
}

type gridError struct {
	Code   int `json:"code"`
	Causes []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"causes"`
}

func (in gridInput) spec() spec {
	s := spec{}
	if in.Policy != nil {
		s["ipFamilyPolicy"] = *in.Policy
	}
	if in.Families != nil {
		s["ipFamilies"] = in.Families
	}
	if in.ClusterIP != "" {
		s["clusterIP"] = in.ClusterIP
	}
	if in.ClusterIPs != nil {
		s["clusterIPs"] = in.ClusterIPs
	}
	if in.Selector {
		s["selector"] = map[string]any{"app": "grid"}
	}
	return s
}

func TestUpdateGridMatchesAPIServer(t *testing.T) {
	raw, err := os.ReadFile("testdata/update_grid.json")
	if err != nil {
		t.Fatal(err)
	}
	var g updateGridFile
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cells) == 0 {
		t.Fatal("empty update grid")
	}
	var accepted, rejected, upgrades, downgrades int
	for _, cell := range g.Cells {
		t.Run(cell.Cluster+"/"+cell.From+"/"+cell.Name, func(t *testing.T) {
			old := spec{"ipFamilyPolicy": cell.Stored.Policy, "ipFamilies": cell.Stored.Families,
				"clusterIPs": cell.Stored.ClusterIPs, "clusterIP": cell.Stored.ClusterIPs[0]}
			if cell.Initial.Selector {
				old["selector"] = map[string]any{"app": "grid"}
			}
			d, err := Evaluate(Input{Families: shapes[cell.Cluster], Operation: Update,
				Object: svcJSON(t, "grid", cell.Request.spec()), OldObject: svcJSON(t, "grid", old)})
			if cell.Error != nil {
				rejected++
				var inv *InvalidError
				if !errors.As(err, &inv) {
					t.Fatalf("apiserver answered %d %v; engine: decision %+v err %v", cell.Error.Code, cell.Error.Causes, d, err)
				}
				if len(inv.Errs) != len(cell.Error.Causes) {
					t.Fatalf("apiserver causes %v; engine %v", cell.Error.Causes, inv.Errs)
				}
				for i, c := range cell.Error.Causes {
					if e := inv.Errs[i]; e.Field != c.Field || e.ErrorBody() != c.Message {
						t.Errorf("cause %d: apiserver %s: %s; engine %s: %s", i, c.Field, c.Message, e.Field, e.ErrorBody())
					}
				}
				return
			}
			accepted++
			if err != nil {
				t.Fatalf("apiserver accepted (%+v); engine: %v", cell.Result, err)
			}
			r := cell.Result
			if string(d.Policy) != r.Policy || !slices.Equal(familyStrings(d.Families), r.Families) {
				t.Errorf("apiserver %s %v; engine %s %v", r.Policy, r.Families, d.Policy, d.Families)
			}
			// Given IPs must be kept verbatim; the rest are the families the
			// engine says the apiserver allocates. The generator masks the
			// result IPs where the PUT omitted them (a dynamic pick differs
			// run to run); then only families and counts are compared.
			var given []string
			for _, ip := range d.ClusterIPs {
				given = append(given, familyName(ip))
			}
			if got := append(given, familyStrings(d.Allocate)...); !slices.Equal(got, r.ClusterIPFamilies) {
				t.Errorf("clusterIP families: apiserver %v, engine given %v + allocate %v", r.ClusterIPFamilies, d.ClusterIPs, d.Allocate)
			}
			if len(d.Allocate) > 0 {
				upgrades++
			}
			var gone []string
			if r.ClusterIPs != nil {
				if len(d.ClusterIPs) > len(r.ClusterIPs) || !slices.Equal(d.ClusterIPs, r.ClusterIPs[:len(d.ClusterIPs)]) {
					t.Errorf("clusterIPs: apiserver %v, engine keeps %v", r.ClusterIPs, d.ClusterIPs)
				}
				// A released IP is one the stored object had and the result lacks.
				for _, ip := range cell.Stored.ClusterIPs {
					if ip != none && !slices.Contains(r.ClusterIPs, ip) {
						gone = append(gone, ip)
					}
				}
				if !slices.Equal(gone, d.Release) {
					t.Errorf("released: apiserver dropped %v, engine releases %v", gone, d.Release)
				}
			} else if cell.Stored.ClusterIPs[0] != none {
				if n := len(cell.Stored.ClusterIPs) - len(r.ClusterIPFamilies); n > 0 {
					gone = cell.Stored.ClusterIPs[len(r.ClusterIPFamilies):]
				}
				if !slices.Equal(gone, d.Release) {
					t.Errorf("released: apiserver kept %d of %v, engine releases %v", len(r.ClusterIPFamilies), cell.Stored.ClusterIPs, d.Release)
				}
			}
			if len(gone) > 0 {
				downgrades++
			}
		})
	}
	if accepted == 0 || rejected == 0 || upgrades == 0 || downgrades == 0 {
		t.Fatalf("grid must hold accepted (%d), rejected (%d), upgrade (%d) and downgrade (%d) cells", accepted, rejected, upgrades, downgrades)
	}
	t.Logf("%d PUT cells: %d accepted (%d upgrades, %d downgrades), %d rejected, all as kube-apiserver %s answered",
		len(g.Cells), accepted, upgrades, downgrades, rejected, g.Kubernetes)
}

// familyName is the grid's name for a clusterIP's family.
func familyName(ip string) string {
	if ip == none {
		return "None"
	}
	return string(familyOf(ip))
}

// TestEvaluateCreateLeavesPosted: the engine copies only the fields the
// create pipeline writes (specCopy), so it must never write anything else:
// the posted Service (Decision.Service, which the webhook builds its patch
// from) is unchanged after every cell of the create grid, with and without
// a default policy, and for the legacy field.
func TestEvaluateCreateLeavesPosted(t *testing.T) {
	raw, err := os.ReadFile("testdata/create_grid.json")
	if err != nil {
		t.Fatal(err)
	}
	var g gridFile
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	var objs [][]byte
	for _, cell := range g.Cells {
		s := cell.Input.spec()
		objs = append(objs, svcJSON(t, "grid", s))
		s["ipFamily"] = "IPv6"
		objs = append(objs, svcJSON(t, "grid", s))
	}
	checked := 0
	for _, obj := range objs {
		for _, fams := range [][]corev1.IPFamily{clusterV4, clusterV6, clusterV4V6, clusterV6V4} {
			for _, def := range []*corev1.IPFamilyPolicy{nil, ptrPolicy(corev1.IPFamilyPolicyRequireDualStack), ptrPolicy(corev1.IPFamilyPolicySingleStack)} {
				svc, _, err := decode(obj)
				if err != nil {
					t.Fatal(err)
				}
				want := svc.DeepCopy()
				d, err := Evaluate(Input{Families: fams, Operation: Create, Object: obj, Service: svc, DefaultPolicy: def})
				if err == nil && d.Service != svc {
					t.Fatalf("decision does not carry the posted Service")
				}
				if !reflect.DeepEqual(svc, want) {
					t.Fatalf("Evaluate changed the posted Service %s (cluster %v, default %v):\nbefore %+v\nafter  %+v", obj, fams, def, want.Spec, svc.Spec)
				}
				checked++
			}
		}
	}
	t.Logf("%d evaluations checked", checked)
}

// TestConfiguredDefaultNeverRejects: on every CREATE cell of the recorded
// grid, a configured default (as EffectiveDefault applies it) never turns a
// Service the apiserver accepts into a rejected one. This is what lets the
// webhook and its MutatingAdmissionPolicy rendering apply the default
// without first validating the Service.
func TestConfiguredDefaultNeverRejects(t *testing.T) {
	raw, err := os.ReadFile("testdata/create_grid.json")
	if err != nil {
		t.Fatal(err)
	}
	var g gridFile
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, cell := range g.Cells {
		if cell.Input.Policy != nil || cell.Error != nil {
			continue
		}
		s := cell.Input.spec() // no policy of its own: skipped above
		for _, p := range []corev1.IPFamilyPolicy{single, prefer, require} {
			d, err := Evaluate(Input{Families: shapes[cell.Cluster], Operation: Create, Object: svcJSON(t, "grid", s), DefaultPolicy: &p})
			if err != nil {
				t.Errorf("%s/%s: default %s rejects a Service the apiserver accepts: %v", cell.Cluster, cell.Name, p, err)
				continue
			}
			checked++
			if d.Writes(FieldIPFamilyPolicy) && EffectiveDefault(&p, len(shapes[cell.Cluster])) != nil && d.Policy != p &&
				!(cell.Input.ClusterIP == "None" && !cell.Input.Selector) {
				t.Errorf("%s/%s: default %s applies but the engine chose %s", cell.Cluster, cell.Name, p, d.Policy)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no accepted cell without a policy in the grid")
	}
}
