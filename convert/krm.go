package convert

import (
	"strconv"

	yaml "go.yaml.in/yaml/v3"
)

// The KRM Functions Specification (kustomize exec/container functions,
// kpt): the function reads one ResourceList on stdin and writes one back
// with the transformed items and its results.
const (
	krmGroupVersion      = "config.kubernetes.io/v1"
	krmGroupVersionAlpha = "config.kubernetes.io/v1alpha1" // kustomize < 4, kpt v0
	krmKind              = "ResourceList"
)

// Annotations kustomize (kyaml) puts on items so results can point at the
// file an item came from; the internal.* forms are current, the others
// legacy.
var (
	krmPathAnnotations  = []string{"internal.config.kubernetes.io/path", "config.kubernetes.io/path"}
	krmIndexAnnotations = []string{"internal.config.kubernetes.io/index", "config.kubernetes.io/index"}
)

// resourceList returns the document node when data is exactly one KRM
// ResourceList (YAML or JSON), else nil.
func resourceList(data []byte) *yaml.Node {
	var doc *yaml.Node
	if looksLikeJSON(data) {
		if vals, err := splitJSON(data); err == nil && len(vals) == 1 {
			if n, err := jsonToNode(vals[0]); err == nil {
				doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}
			}
		}
	}
	if doc == nil {
		for _, s := range splitYAML(data) {
			n, err := parseSection(s.text)
			if err != nil || (n != nil && doc != nil) {
				return nil
			}
			if n != nil {
				doc = n
			}
		}
	}
	if doc == nil || len(doc.Content) == 0 {
		return nil
	}
	rl := doc.Content[0]
	if av := scalarAt(rl, "apiVersion"); scalarAt(rl, "kind") != krmKind || (av != krmGroupVersion && av != krmGroupVersionAlpha) {
		return nil
	}
	return doc
}

// functionConfig reads the settings of the ResourceList's functionConfig:
// data.serviceCIDRs and data.dropOnly ("true") of a ConfigMap (the usual
// kustomize transformer config), or the same keys under spec for any other
// kind. Command-line flags win.
func functionConfig(doc *yaml.Node) (cidrs string, dropOnly bool) {
	fc := mapValue(doc.Content[0], "functionConfig")
	for _, section := range []string{"data", "spec"} {
		m := mapValue(fc, section)
		if cidrs == "" {
			cidrs = scalarAt(m, "serviceCIDRs")
		}
		if b, err := strconv.ParseBool(scalarAt(m, "dropOnly")); err == nil && b {
			dropOnly = true
		}
	}
	return cidrs, dropOnly
}

// krmResult is one entry of ResourceList.results (kyaml framework.Result).
type krmResult struct {
	Message     string    `yaml:"message"`
	Severity    string    `yaml:"severity"`
	ResourceRef *krmRef   `yaml:"resourceRef,omitempty"`
	Field       *krmField `yaml:"field,omitempty"`
	File        *krmFile  `yaml:"file,omitempty"`
}

type krmRef struct {
	APIVersion string `yaml:"apiVersion,omitempty"`
	Kind       string `yaml:"kind,omitempty"`
	Name       string `yaml:"name,omitempty"`
	Namespace  string `yaml:"namespace,omitempty"`
}

type krmField struct {
	Path string `yaml:"path"`
}

type krmFile struct {
	Path  string `yaml:"path,omitempty"`
	Index int    `yaml:"index,omitempty"`
}

// ConvertResourceList rewrites the items of a ResourceList document in
// place and appends one result per diagnostic. name stands for the input
// in diagnostics of items that carry no path annotation; their Doc is the
// 1-based item position. It returns the ResourceList to print.
func (c *Converter) ConvertResourceList(doc *yaml.Node, name string) Result {
	var res Result
	rl := doc.Content[0]
	var files []*krmFile
	if items := mapValue(rl, "items"); items != nil && items.Kind == yaml.SequenceNode {
		for i, it := range items.Content {
			at, file := itemLocation(it, name, i)
			before := len(res.Diagnostics)
			var rws []*rewrite
			c.visit(it, "", at, 0, &rws, &res.Diagnostics)
			for _, rw := range rws {
				rw.applyNode()
			}
			res.Rewritten += len(rws)
			for range res.Diagnostics[before:] {
				files = append(files, file)
			}
		}
	}
	if len(res.Diagnostics) > 0 {
		results := mapValue(rl, "results")
		if results == nil || results.Kind != yaml.SequenceNode {
			results = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			if i := mapIndex(rl, "results"); i >= 0 {
				rl.Content[i+1] = results
			} else {
				rl.Content = append(rl.Content, scalarNode("results"), results)
			}
		}
		for i, d := range res.Diagnostics {
			r := krmResult{Message: d.Message, Severity: string(d.Severity), File: files[i]}
			if d.Field != "" {
				r.Field = &krmField{Path: d.Field}
			}
			if d.Resource != (ResourceRef{}) {
				r.ResourceRef = &krmRef{APIVersion: d.Resource.APIVersion, Kind: d.Resource.Kind, Name: d.Resource.Name, Namespace: d.Resource.Namespace}
			}
			var n yaml.Node
			if err := n.Encode(r); err == nil {
				results.Content = append(results.Content, &n)
			}
		}
	}
	out, err := encodeDoc(doc)
	if err != nil {
		res.Diagnostics = append(res.Diagnostics, Diagnostic{File: name, Doc: 1, Message: "cannot print the ResourceList: " + err.Error(), Severity: SeverityError})
	}
	res.Output = out
	return res
}

// itemLocation names an item for diagnostics: the file and 1-based
// document kustomize read it from when it says so, else the input name
// and the 1-based item position.
func itemLocation(it *yaml.Node, name string, i int) (location, *krmFile) {
	ann := mapValue(mapValue(it, "metadata"), "annotations")
	var path string
	for _, a := range krmPathAnnotations {
		if path = scalarAt(ann, a); path != "" {
			break
		}
	}
	if path == "" {
		return location{file: name, doc: i + 1}, nil
	}
	idx := 0
	for _, a := range krmIndexAnnotations {
		if v := scalarAt(ann, a); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				idx = n
			}
			break
		}
	}
	return location{file: path, doc: idx + 1}, &krmFile{Path: path, Index: idx}
}
