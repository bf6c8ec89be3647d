package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
)

// Converter rewrites the legacy spec.ipFamily of v1 Services in manifests.
type Converter struct {
	// Families are the cluster's Service IP families, primary first (from
	// --service-cidrs). With them every v1 Service is checked against the
	// cluster exactly as the webhook and the apiserver would check it on
	// CREATE, e.g. a family the cluster lacks is an error. nil means
	// "cluster unknown": only Services that carry spec.ipFamily are looked
	// at, and only errors that every cluster would raise are reported (see
	// translationFamilies).
	Families []corev1.IPFamily
	// DropOnly removes spec.ipFamily without writing ipFamilyPolicy or
	// ipFamilies: the UPDATE rule of docs/dualstack-rules.md §3.5 for manifests
	// of Services that already exist on a 1.20+ cluster. Those Services
	// kept the family the field chose (the apiserver rebuilt it from the
	// clusterIP), and one upgraded to dual-stack since would be downgraded
	// by an apply that writes SingleStack.
	DropOnly bool
}

// translationFamilies is the cluster the engine is shown when no cluster
// is known. A dual-stack cluster is the most permissive shape: every family
// is configured and RequireDualStack is satisfiable, so each error the
// engine still raises on it (an unknown family name, ipFamily contradicting
// clusterIP or ipFamilies, malformed clusterIPs, ...) is an error on every
// cluster, and no error depends on a guess. The primary-first order only
// changes families the apiserver would default, which convert never writes,
// and the "allowed families" list in messages, which then reads
// "IPv4, IPv6" like the 1.19 message on a dual-stack cluster.
var translationFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}

// Severity of a Diagnostic; the values are the KRM function result
// severities.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one error or warning about one document.
type Diagnostic struct {
	// File is the path given with -f, "<stdin>", or for KRM items the
	// file kustomize read the item from.
	File string
	// Doc is the 1-based position of the document among the non-empty
	// documents of File (or of the item in a ResourceList).
	Doc int
	// Field is the field path the message is about, prefixed with
	// items[i]. inside Lists; empty when the message is about the whole
	// document.
	Field string
	// Message is the text after the field, e.g. the apiserver's
	// `Invalid value: "IPv7": only the following families are allowed: ...`.
	Message  string
	Severity Severity
	// Resource identifies the object (for KRM results); may be partly empty.
	Resource ResourceRef
}

// ResourceRef names an object the way KRM function results do.
type ResourceRef struct {
	APIVersion, Kind, Name, Namespace string
}

// String renders the contract line `file:document: field: message`;
// warnings carry "warning: " after the location.
func (d Diagnostic) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: ", d.File, d.Doc)
	if d.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if d.Field != "" {
		b.WriteString(d.Field + ": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Result is what Convert made of one input file.
type Result struct {
	// Output is the rewritten stream: the input with legacy Services
	// rewritten, everything else byte for byte (JSON input is printed as
	// YAML).
	Output []byte
	// Diagnostics in document order.
	Diagnostics []Diagnostic
	// Rewritten counts the Services whose spec.ipFamily was rewritten.
	Rewritten int
}

// Failed reports whether any diagnostic is an error.
func (r *Result) Failed() bool {
	for _, d := range r.Diagnostics {
		if d.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Convert rewrites one file's worth of YAML or JSON. file names the input in
// diagnostics. It never panics and never returns partial documents: a
// document with errors is copied unchanged and the errors are reported.
func (c *Converter) Convert(file string, data []byte) Result {
	if looksLikeJSON(data) {
		if vals, err := splitJSON(data); err == nil {
			return c.convertJSON(file, vals)
		}
		// Not JSON after all (a YAML flow mapping, or broken): the YAML
		// parser gives the better message.
	}
	var res Result
	var out bytes.Buffer
	doc := 0
	for _, s := range splitYAML(data) {
		node, err := parseSection(s.text)
		if node == nil && err == nil {
			out.Write(s.text) // comments and separators only
			continue
		}
		doc++
		at := location{file: file, doc: doc}
		if err != nil {
			res.Diagnostics = append(res.Diagnostics, at.errorf("", "cannot parse YAML: %s", fileLines(err, s.line)))
			out.Write(s.text)
			continue
		}
		text, n := c.rewriteDoc(node, s.text, at, &res.Diagnostics)
		res.Rewritten += n
		out.Write(text)
	}
	res.Output = out.Bytes()
	return res
}

func (c *Converter) convertJSON(file string, vals []json.RawMessage) Result {
	var res Result
	var out bytes.Buffer
	for i, raw := range vals {
		at := location{file: file, doc: i + 1}
		node, err := jsonToNode(raw)
		if err != nil {
			res.Diagnostics = append(res.Diagnostics, at.errorf("", "cannot parse JSON: %v", err))
			continue
		}
		doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{node}}
		text, n := c.rewriteDoc(doc, nil, at, &res.Diagnostics)
		res.Rewritten += n
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(text)
	}
	res.Output = out.Bytes()
	return res
}

// yamlLine finds the parser's line numbers so they can be made file-relative.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// fileLines rewrites "line N" in a parser error (counted from the start of
// the section) into the line of the file.
func fileLines(err error, first int) string {
	return yamlLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, convErr := strconv.Atoi(strings.TrimPrefix(m, "line "))
		if convErr != nil {
			return m
		}
		return "line " + strconv.Itoa(n+first-1)
	})
}

// location is where a document came from, for diagnostics.
type location struct {
	file string
	doc  int
}

func (l location) errorf(field, format string, args ...any) Diagnostic {
	return Diagnostic{File: l.file, Doc: l.doc, Field: field, Message: fmt.Sprintf(format, args...), Severity: SeverityError}
}

// rewriteDoc rewrites the legacy Services of one document. text is the
// document's exact source (nil for JSON input). It returns the text to
// write and how many Services were rewritten. Edits are made line-wise in
// text when every rewrite allows it, so the rest of the document stays byte
// for byte; otherwise the node tree is edited and printed (comments kept,
// indentation normalised).
func (c *Converter) rewriteDoc(doc *yaml.Node, text []byte, at location, diags *[]Diagnostic) ([]byte, int) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return text, 0
	}
	var rws []*rewrite
	c.visit(doc.Content[0], "", at, 0, &rws, diags)
	if text != nil {
		if len(rws) == 0 {
			return text, 0
		}
		if out, ok := editLines(text, rws); ok {
			return out, len(rws)
		}
	}
	for _, rw := range rws {
		rw.applyNode()
	}
	out, err := encodeDoc(doc)
	if err != nil {
		*diags = append(*diags, at.errorf("", "cannot print the rewritten document: %v", err))
		return text, 0
	}
	if text != nil && isSeparator(firstLine(text)) {
		out = append([]byte("---\n"), out...)
	}
	return out, len(rws)
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return b
}

func encodeDoc(doc *yaml.Node) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil { // the encoder panics on some trees
			err = fmt.Errorf("YAML encoder failed: %v", r)
		}
	}()
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// maxListDepth bounds recursion into Lists of Lists.
const maxListDepth = 8

// visit looks at one object: a v1 Service is evaluated, the items of a v1
// List (List, ServiceList, ...) are visited with an items[i]. prefix, and
// everything else is left alone.
func (c *Converter) visit(n *yaml.Node, prefix string, at location, depth int, rws *[]*rewrite, diags *[]Diagnostic) {
	if n.Kind != yaml.MappingNode {
		return
	}
	apiVersion, kind := scalarAt(n, "apiVersion"), scalarAt(n, "kind")
	if apiVersion != "v1" {
		return
	}
	switch {
	case kind == "Service":
		if rw := c.service(n, prefix, at, diags); rw != nil {
			*rws = append(*rws, rw)
		}
	case strings.HasSuffix(kind, "List") && depth < maxListDepth:
		items := mapValue(n, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return
		}
		for i, it := range items.Content {
			c.visit(it, fmt.Sprintf("%sitems[%d].", prefix, i), at, depth+1, rws, diags)
		}
	}
}

// service evaluates one v1 Service with the policy engine and returns the
// rewrite its legacy field needs, or nil.
func (c *Converter) service(svc *yaml.Node, prefix string, at location, diags *[]Diagnostic) *rewrite {
	spec := mapValue(svc, "spec")
	legacy := -1
	if spec != nil && spec.Kind == yaml.MappingNode {
		legacy = mapIndex(spec, "ipFamily")
	}
	if legacy < 0 && c.Families == nil {
		return nil // nothing to translate, and no cluster to check against
	}
	ref := refOf(svc)
	report := func(field, msg string, sev Severity) {
		*diags = append(*diags, Diagnostic{File: at.file, Doc: at.doc, Field: field, Message: msg, Severity: sev, Resource: ref})
	}
	// A key written twice leaves it to the parser which one counts; the
	// edit would remove one and let the other surface. Refuse, as kubectl
	// does for duplicate keys.
	for _, k := range []string{"ipFamily", "ipFamilies", "ipFamilyPolicy"} {
		if countKey(spec, k) > 1 {
			report(prefix+"spec."+k, "Duplicate value: the key appears more than once", SeverityError)
			return nil
		}
	}
	var drop *rewrite
	if legacy >= 0 && isNull(spec.Content[legacy+1]) {
		// "ipFamily: null" (or empty) never chose a family: the engine,
		// like the apiserver, reads it as absent. Only the key goes.
		drop = &rewrite{spec: spec, key: spec.Content[legacy], value: spec.Content[legacy+1], scope: svc}
		report(strings.TrimSuffix(prefix, "."), "spec.ipFamily: null was removed in Kubernetes 1.20; dropped", SeverityWarning)
		if c.Families == nil {
			return drop
		}
	} else if legacy >= 0 && c.DropOnly {
		drop = &rewrite{spec: spec, key: spec.Content[legacy], value: spec.Content[legacy+1], scope: svc}
		report(strings.TrimSuffix(prefix, "."), fmt.Sprintf("spec.ipFamily: %s was removed in Kubernetes 1.20; dropped, ipFamilyPolicy and ipFamilies left as they are (--drop-only)", legacyValue(drop.value)), SeverityWarning)
		if c.Families == nil {
			return drop
		}
	}
	families := c.Families
	if families == nil {
		families = translationFamilies
	}
	// With --drop-only the engine sees the Service without the field, as
	// the apiserver will.
	raw, err := engineJSON(svc, drop != nil)
	if err != nil {
		report(strings.TrimSuffix(prefix, "."), "cannot read Service: "+err.Error(), SeverityError)
		return nil
	}
	d, err := policy.Evaluate(policy.Input{Families: families, Operation: policy.Create, Object: raw})
	if err != nil {
		var inv *policy.InvalidError
		if errors.As(err, &inv) {
			for _, fe := range inv.Errs {
				report(prefix+fe.Field, fe.ErrorBody(), SeverityError)
			}
		} else {
			report(strings.TrimSuffix(prefix, "."), err.Error(), SeverityError)
		}
		return nil
	}
	for _, w := range d.Warnings {
		report(strings.TrimSuffix(prefix, "."), w, SeverityWarning)
	}
	if drop != nil {
		return drop
	}
	if legacy < 0 {
		return nil
	}
	rw := &rewrite{spec: spec, key: spec.Content[legacy], value: spec.Content[legacy+1], scope: svc}
	if d.Service.Spec.Type != corev1.ServiceTypeExternalName {
		if len(d.Families) == 0 { // cannot happen for an accepted non-ExternalName Service
			report(prefix+"spec.ipFamily", "policy engine returned no families", SeverityError)
			return nil
		}
		// The translation of docs/dualstack-rules.md §3.5, and only it: the
		// engine has checked that ipFamily agrees with clusterIP and
		// ipFamilies, so Families[0] is the legacy value. Families the
		// apiserver would default are not written: the manifest stays
		// portable between clusters.
		rw.family = string(d.Families[0])
		if v := rw.value; v.Kind != yaml.ScalarNode || v.Value != rw.family {
			// The engine accepted a value that is not the family it
			// chose: never write a guess.
			report(prefix+"spec.ipFamily", fmt.Sprintf("internal error: policy engine chose %s for ipFamily %s", rw.family, legacyValue(v)), SeverityError)
			return nil
		}
		if len(d.Service.Spec.IPFamilies) == 0 {
			rw.families = true
			rw.familiesAt = mapValue(spec, "ipFamilies") // present but null or []
		}
		if d.Service.Spec.IPFamilyPolicy == nil {
			rw.policy = true
			rw.policyAt = mapValue(spec, "ipFamilyPolicy") // present but null
		}
	}
	return rw
}

// engineJSON renders a Service for the policy engine. metadata is reduced
// to the name (used in messages): the webhook's admission-time exemptions
// (the dualstack-webhook.io/skip label, default/kubernetes) say "do not
// mutate this at admission", but spec.ipFamily is dead on every 1.20+
// apiserver whoever owns the Service, so convert translates it anyway.
//
// dropLegacy leaves spec.ipFamily out.
func engineJSON(svc *yaml.Node, dropLegacy bool) (raw []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			raw, err = nil, fmt.Errorf("YAML encoder failed: %v", r)
		}
	}()
	shallow := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(svc.Content); i += 2 {
		k, v := svc.Content[i], svc.Content[i+1]
		if k.Value == "metadata" {
			meta := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if name := mapValue(v, "name"); name != nil && name.Kind == yaml.ScalarNode {
				meta.Content = append(meta.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "name"}, name)
			}
			v = meta
		}
		if k.Value == "spec" && dropLegacy && v.Kind == yaml.MappingNode {
			spec := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for j := 0; j+1 < len(v.Content); j += 2 {
				if v.Content[j].Value != "ipFamily" {
					spec.Content = append(spec.Content, v.Content[j], v.Content[j+1])
				}
			}
			v = spec
		}
		shallow.Content = append(shallow.Content, k, v)
	}
	y, err := yaml.Marshal(shallow)
	if err != nil {
		return nil, err
	}
	// sigs.k8s.io/yaml converts the way kubectl does (YAML 1.1 scalars,
	// integer-valued numbers kept as integers).
	return sigsyaml.YAMLToJSON(y)
}

// isNull reports whether a value node is YAML null (null, ~, or empty).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// countKey counts the occurrences of key in mapping m.
func countKey(m *yaml.Node, key string) int {
	n := 0
	if m != nil && m.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
				n++
			}
		}
	}
	return n
}

// legacyValue renders the legacy value for messages.
func legacyValue(v *yaml.Node) string {
	if v.Kind == yaml.ScalarNode {
		return strconv.Quote(v.Value)
	}
	return "(not a string)"
}

// scalarAt returns the value of a scalar key of a mapping, or "".
func scalarAt(m *yaml.Node, key string) string {
	if v := mapValue(m, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

// mapValue returns the value node of key in mapping m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if i := mapIndex(m, key); i >= 0 {
		return m.Content[i+1]
	}
	return nil
}

// mapIndex returns the index of key's key node in m.Content, or -1. The
// last occurrence wins, as in the JSON the apiserver decodes.
func mapIndex(m *yaml.Node, key string) int {
	if m == nil || m.Kind != yaml.MappingNode {
		return -1
	}
	found := -1
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			found = i
		}
	}
	return found
}

func refOf(obj *yaml.Node) ResourceRef {
	meta := mapValue(obj, "metadata")
	return ResourceRef{
		APIVersion: scalarAt(obj, "apiVersion"),
		Kind:       scalarAt(obj, "kind"),
		Name:       scalarAt(meta, "name"),
		Namespace:  scalarAt(meta, "namespace"),
	}
}
