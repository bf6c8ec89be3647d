package policy

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// gridFile is the apiserver's own answer to every cell of the CREATE matrix
// (dualstack-rules.md §1.3: 4 cluster shapes × 7 clusterIPs shapes × 4
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
		Cluster string `json:"cluster"`
		Name    string `json:"name"`
		Input   struct {
			Policy     *string  `json:"ipFamilyPolicy"`
			Families   []string `json:"ipFamilies"`
			ClusterIP  string   `json:"clusterIP"`
			ClusterIPs []string `json:"clusterIPs"`
			Selector   bool     `json:"selector"`
		} `json:"input"`
		Result *struct {
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
			s := spec{}
			if cell.Input.Policy != nil {
				s["ipFamilyPolicy"] = *cell.Input.Policy
			}
			if cell.Input.Families != nil {
				s["ipFamilies"] = cell.Input.Families
			}
			if cell.Input.ClusterIP != "" {
				s["clusterIP"] = cell.Input.ClusterIP
			}
			if cell.Input.ClusterIPs != nil {
				s["clusterIPs"] = cell.Input.ClusterIPs
			}
			if cell.Input.Selector {
				s["selector"] = map[string]any{"app": "grid"}
			}
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
