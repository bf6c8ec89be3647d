package grid

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// Cluster is one cluster shape of the grid.
type Cluster struct {
	Name  string `json:"name"`
	CIDRs string `json:"serviceClusterIPRange"`
}

// Clusters are the four shapes of upstream TestCreateInitIPFields.
var Clusters = []Cluster{
	{"v4", framework.V4CIDRs},
	{"v6", framework.V6CIDRs},
	{"v4v6", framework.V4V6CIDRs},
	{"v6v4", framework.V6V4CIDRs},
}

// Dimensions of the create grid: 4 policies × 5 ipFamilies × 7 clusterIPs
// shapes = 140 cells per cluster.
var (
	Policies = []string{"", "SingleStack", "PreferDualStack", "RequireDualStack"}
	Families = [][]string{nil, {"IPv4"}, {"IPv6"}, {"IPv4", "IPv6"}, {"IPv6", "IPv4"}}
	// IPShapes: none given; headless with/without selector; one v4; one v6;
	// v4+v6; v6+v4.
	IPShapes = []string{"none", "None+selector", "None-selector", "v4", "v6", "v4+v6", "v6+v4"}
)

// Addresses given in cells are inside the grid's canonical ranges (equal to
// the clusters' when that family is configured), at offset 256+cell index so
// no two cells of one cluster share one.
var (
	v4Range = netip.MustParsePrefix("10.0.0.0/16")
	v6Range = netip.MustParsePrefix("2000::/108")
)

// Input is the dual-stack part of the Service sent (everything else: a
// ClusterIP Service named "grid", TCP port 80, selector app=grid unless noted).
type Input struct {
	IPFamilyPolicy *string  `json:"ipFamilyPolicy"`
	IPFamilies     []string `json:"ipFamilies"`
	ClusterIP      string   `json:"clusterIP,omitempty"`
	ClusterIPs     []string `json:"clusterIPs"`
	Selector       bool     `json:"selector"`
}

// Result is what was stored.
type Result struct {
	IPFamilyPolicy string   `json:"ipFamilyPolicy"`
	IPFamilies     []string `json:"ipFamilies"`
	// ClusterIPFamilies: family per clusterIP, ["None"] for headless.
	ClusterIPFamilies []string `json:"clusterIPFamilies"`
	ClusterIPCount    int      `json:"clusterIPCount"`
	// ClusterIPs is recorded when some were given in the input: the stored
	// values, with "allocated" standing for each address the apiserver picked
	// (random, so not recorded).
	ClusterIPs []string `json:"clusterIPs,omitempty"`
}

// Error is the apiserver's refusal.
type Error struct {
	Code    int32   `json:"code"`
	Reason  string  `json:"reason"`
	Message string  `json:"message"`
	Causes  []Cause `json:"causes,omitempty"`
}

// Cause is one field error, with its message split the way
// k8s.io/apimachinery/pkg/util/validation/field renders it.
type Cause struct {
	Field   string `json:"field"`
	Type    string `json:"type"`
	Message string `json:"message"`
	// Value is the bad value as rendered (JSON) for Invalid/Unsupported/Duplicate.
	Value string `json:"value,omitempty"`
	// Detail is the text after the value (Invalid, Unsupported) or the whole
	// text after the type (Required, Forbidden, ...).
	Detail string `json:"detail,omitempty"`
}

// Cell is one grid entry: input and exactly one of Result/Error.
type Cell struct {
	Cluster string  `json:"cluster"`
	Name    string  `json:"name"`
	Input   Input   `json:"input"`
	Result  *Result `json:"result,omitempty"`
	Error   *Error  `json:"error,omitempty"`
}

// File is the layout of create_grid.json / update_grid.json.
type File struct {
	Comment    string    `json:"comment"`
	Kubernetes string    `json:"kubernetes"`
	Clusters   []Cluster `json:"clusters"`
	// DryRunSameAsCreate: a dry-run create gave the same outcome as the real
	// create in every cell (checked while generating).
	DryRunSameAsCreate bool   `json:"dryRunSameAsCreate,omitempty"`
	Cells              []Cell `json:"cells"`
}

func ip(p netip.Prefix, off uint64) string {
	a, err := framework.IPAt(p, off)
	if err != nil {
		panic(err) // offsets are small constants
	}
	return a.String()
}

// CreateCells returns the 140 inputs of one cluster, in a fixed order.
func CreateCells() []Cell {
	var cells []Cell
	i := uint64(0)
	for _, shape := range IPShapes {
		for _, p := range Policies {
			for _, f := range Families {
				off := 256 + i
				i++
				in := Input{Selector: true, IPFamilies: f}
				if p != "" {
					in.IPFamilyPolicy = &p
				}
				v4, v6 := ip(v4Range, off), ip(v6Range, off)
				switch shape {
				case "None+selector":
					in.ClusterIPs = []string{"None"}
				case "None-selector":
					in.ClusterIPs = []string{"None"}
					in.Selector = false
				case "v4":
					in.ClusterIPs = []string{v4}
				case "v6":
					in.ClusterIPs = []string{v6}
				case "v4+v6":
					in.ClusterIPs = []string{v4, v6}
				case "v6+v4":
					in.ClusterIPs = []string{v6, v4}
				}
				if len(in.ClusterIPs) > 0 {
					in.ClusterIP = in.ClusterIPs[0]
				}
				cells = append(cells, Cell{Name: cellName(p, f, shape), Input: in})
			}
		}
	}
	return cells
}

func cellName(policy string, families []string, shape string) string {
	if policy == "" {
		policy = "unset"
	}
	f := "unset"
	if families != nil {
		f = "[" + strings.Join(families, ",") + "]"
	}
	return fmt.Sprintf("clusterIPs=%s/policy=%s/families=%s", shape, policy, f)
}

// Service renders an input as the Service to send.
func (in Input) Service() *corev1.Service {
	sv := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "grid"},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			Ports:      []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}},
			ClusterIP:  in.ClusterIP,
			ClusterIPs: in.ClusterIPs,
		},
	}
	if in.Selector {
		sv.Spec.Selector = map[string]string{"app": "grid"}
	}
	if in.IPFamilyPolicy != nil {
		p := corev1.IPFamilyPolicy(*in.IPFamilyPolicy)
		sv.Spec.IPFamilyPolicy = &p
	}
	for _, f := range in.IPFamilies {
		sv.Spec.IPFamilies = append(sv.Spec.IPFamilies, corev1.IPFamily(f))
	}
	return sv
}

// Record fills the cell's Result or Error from an API answer.
func (c *Cell) Record(got *corev1.Service, err error) {
	c.Result, c.Error = nil, nil
	o := framework.OutcomeOf(got, err)
	if o.Error != nil {
		e := &Error{Code: o.Error.Code, Reason: o.Error.Reason, Message: o.Error.Message}
		for _, cs := range o.Error.Causes {
			e.Causes = append(e.Causes, SplitCause(cs))
		}
		c.Error = e
		return
	}
	r := &Result{IPFamilyPolicy: o.IPFamilyPolicy, IPFamilies: o.IPFamilies,
		ClusterIPFamilies: o.ClusterIPFamilies, ClusterIPCount: o.ClusterIPCount}
	if len(c.Input.ClusterIPs) > 0 {
		for i, v := range got.Spec.ClusterIPs {
			if i >= len(c.Input.ClusterIPs) {
				v = "allocated"
			}
			r.ClusterIPs = append(r.ClusterIPs, v)
		}
	}
	c.Result = r
}

// typePrefixes are field.ErrorType strings as rendered in messages.
var typePrefixes = map[string]string{
	"FieldValueInvalid":      "Invalid value: ",
	"FieldValueNotSupported": "Unsupported value: ",
	"FieldValueDuplicate":    "Duplicate value: ",
	"FieldValueRequired":     "Required value",
	"FieldValueForbidden":    "Forbidden",
	"FieldValueTooMany":      "Too many",
	"FieldValueTooLong":      "Too long",
	"FieldValueNotFound":     "Not found: ",
	"InternalError":          "Internal error",
}

// SplitCause splits "Invalid value: <json>: detail" into value and detail.
func SplitCause(c framework.Cause) Cause {
	out := Cause{Field: c.Field, Type: c.Type, Message: c.Message}
	prefix, ok := typePrefixes[c.Type]
	if !ok || !strings.HasPrefix(c.Message, prefix) {
		return out
	}
	rest := strings.TrimPrefix(c.Message, prefix)
	if strings.HasSuffix(prefix, ": ") {
		// A JSON-rendered value, then optionally ": detail".
		dec := json.NewDecoder(strings.NewReader(rest))
		var v json.RawMessage
		if err := dec.Decode(&v); err == nil {
			n := dec.InputOffset()
			out.Value = strings.TrimSpace(rest[:n])
			out.Detail = strings.TrimPrefix(rest[n:], ": ")
			return out
		}
		out.Detail = rest
		return out
	}
	out.Detail = strings.TrimPrefix(rest, ": ")
	return out
}

// Marshal renders the file the way it is committed: indented, newline-ended.
func Marshal(f any) ([]byte, error) {
	var flat bytes.Buffer
	enc := json.NewEncoder(&flat)
	enc.SetEscapeHTML(false) // messages quote with <>& rarely, keep them readable
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	// One cell per line: the files stay diffable cell by cell at about
	// two thirds of the indented size (the update grid is 1800 cells).
	dec := json.NewDecoder(&flat)
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	var out bytes.Buffer
	out.WriteString("{")
	for first := true; dec.More(); first = false {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		if !first {
			out.WriteString(",")
		}
		key, _ := json.Marshal(tok)
		fmt.Fprintf(&out, "\n  %s: ", key)
		var cells []json.RawMessage
		if tok == "cells" && json.Unmarshal(val, &cells) == nil {
			out.WriteString("[")
			for i, c := range cells {
				if i > 0 {
					out.WriteString(",")
				}
				out.WriteString("\n    ")
				out.Write(c)
			}
			out.WriteString("\n  ]")
			continue
		}
		if err := json.Indent(&out, val, "  ", "  "); err != nil {
			return nil, err
		}
	}
	out.WriteString("\n}\n")
	return out.Bytes(), nil
}
