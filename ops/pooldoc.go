package ops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// EditDocument applies e to the text of a pools.yaml document. Operators
// annotate that file (why a range is excluded, who owns a pool), so the edit
// is made on the YAML node tree: comments, key order and the style of
// untouched values survive; only indentation is normalised (two spaces).
// The result is checked to decode to exactly the document ApplyTo gives, so
// the two can never disagree on what apply wrote. An empty src (no document
// yet) is written out from ApplyTo's result.
func EditDocument(src string, e *PoolEdit) (string, bool, error) {
	var cur *alloc.PoolConfig
	if strings.TrimSpace(src) != "" {
		c, err := alloc.ParseConfig([]byte(src))
		if err != nil {
			return "", false, err
		}
		cur = c
	}
	want, changed, err := e.ApplyTo(cur)
	if err != nil || !changed {
		return src, false, err
	}
	if cur == nil {
		b, err := sigsyaml.Marshal(want)
		return string(b), true, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		return "", false, fmt.Errorf("%s: %w", alloc.ConfigMapKey, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return "", false, fmt.Errorf("%s: the document is not a mapping", alloc.ConfigMapKey)
	}
	if err := editNodes(doc.Content[0], e); err != nil {
		return "", false, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return "", false, err
	}
	if err := enc.Close(); err != nil {
		return "", false, err
	}
	got, err := alloc.ParseConfig(buf.Bytes())
	if err != nil {
		return "", false, fmt.Errorf("editing %s kept its comments but broke it (%w): edit it by hand", alloc.ConfigMapKey, err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		return "", false, fmt.Errorf("editing %s in place gave %s, not %s (anchors or merge keys?): edit it by hand", alloc.ConfigMapKey, gj, wj)
	}
	return buf.String(), true, nil
}

// editNodes performs e on the document's root mapping, step for step in
// ApplyTo's order.
func editNodes(root *yaml.Node, e *PoolEdit) error {
	pools := mapValue(root, "pools")
	if e.Materialize != nil && (pools == nil || len(pools.Content) == 0) {
		n, err := toNode(e.Materialize)
		if err != nil {
			return err
		}
		pools = ensureSeq(root, "pools")
		pools.Content = append(pools.Content, n)
		if v := mapValue(root, "defaultPool"); v == nil || v.Value == "" {
			setScalar(root, "defaultPool", e.Materialize.Name)
		}
	}
	if e.Pool != "" && (len(e.Add.IPv4) > 0 || len(e.Add.IPv6) > 0) {
		p := poolNode(root, e.Pool)
		if p == nil {
			n, err := toNode(alloc.PoolSpec{Name: e.Pool})
			if err != nil {
				return err
			}
			pools = ensureSeq(root, "pools")
			pools.Content = append(pools.Content, n)
			p = n
		}
		addrs := ensureMap(p, "addresses")
		for _, fam := range []struct {
			key     string
			entries []string
		}{{"ipv4", e.Add.IPv4}, {"ipv6", e.Add.IPv6}} {
			if len(fam.entries) == 0 {
				continue
			}
			seq := ensureSeq(addrs, fam.key)
			for _, a := range fam.entries {
				if !slices.ContainsFunc(seq.Content, func(n *yaml.Node) bool { return n.Value == a }) {
					seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: a})
				}
			}
		}
	}
	for _, d := range e.Drain {
		p := poolNode(root, d)
		if p == nil {
			return fmt.Errorf("pool %q to drain does not exist", d)
		}
		setScalar(p, "state", string(alloc.PoolDraining))
	}
	if e.RemoveWithin != "" {
		within, err := netip.ParsePrefix(e.RemoveWithin)
		if err != nil {
			return fmt.Errorf("removeWithin: %w", err)
		}
		dropNodes(root, func(r alloc.Range) bool { return within.Contains(r.From) && within.Contains(r.To) })
	}
	if e.RemoveFamily != "" {
		dropNodes(root, func(r alloc.Range) bool { return alloc.FamilyOf(r.From) == e.RemoveFamily })
	}
	if e.DefaultPool != "" {
		if v := mapValue(root, "defaultPool"); v == nil || v.Value != e.DefaultPool {
			setScalar(root, "defaultPool", e.DefaultPool)
		}
	}
	return nil
}

// dropNodes is dropEntries on the node tree.
func dropNodes(root *yaml.Node, drop func(alloc.Range) bool) {
	pools := mapValue(root, "pools")
	if pools == nil || pools.Kind != yaml.SequenceNode {
		return
	}
	pred := func(n *yaml.Node) bool {
		r, err := alloc.ParseRange(n.Value)
		return n.Kind == yaml.ScalarNode && err == nil && drop(r)
	}
	filter := func(m *yaml.Node, key string) {
		seq := mapValue(m, key)
		if seq == nil || seq.Kind != yaml.SequenceNode {
			return
		}
		seq.Content = slices.DeleteFunc(seq.Content, pred)
		if len(seq.Content) == 0 {
			deleteKey(m, key) // omitempty: an emptied list disappears
		}
	}
	var dropped []string
	pools.Content = slices.DeleteFunc(pools.Content, func(p *yaml.Node) bool {
		if p.Kind != yaml.MappingNode {
			return false
		}
		addrs := mapValue(p, "addresses")
		left := 0
		if addrs != nil && addrs.Kind == yaml.MappingNode {
			filter(addrs, "ipv4")
			filter(addrs, "ipv6")
			for _, k := range []string{"ipv4", "ipv6"} {
				if s := mapValue(addrs, k); s != nil {
					left += len(s.Content)
				}
			}
		}
		filter(p, "exclude")
		if left == 0 {
			if n := mapValue(p, "name"); n != nil {
				dropped = append(dropped, n.Value)
			}
			return true
		}
		return false
	})
	if len(pools.Content) == 0 {
		deleteKey(root, "pools")
	}
	if v := mapValue(root, "defaultPool"); v != nil && slices.Contains(dropped, v.Value) {
		deleteKey(root, "defaultPool")
	}
}

// toNode renders a pool (a type with JSON tags) as a block-style node.
func toNode(v any) (*yaml.Node, error) {
	b, err := sigsyaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("rendering a pool gave no mapping")
	}
	n := doc.Content[0]
	// JSON marshalling sorts keys; a new pool reads like the documented
	// ones: name first, then the fields in PoolSpec's order.
	rank := func(k string) int {
		i := slices.Index([]string{"name", "addresses", "exclude", "strategy", "state", "namespaces", "namespaceSelector"}, k)
		if i < 0 {
			return 99
		}
		return i
	}
	pairs := make([][2]*yaml.Node, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		pairs = append(pairs, [2]*yaml.Node{n.Content[i], n.Content[i+1]})
	}
	slices.SortStableFunc(pairs, func(a, b [2]*yaml.Node) int { return rank(a[0].Value) - rank(b[0].Value) })
	n.Content = n.Content[:0]
	for _, p := range pairs {
		n.Content = append(n.Content, p[0], p[1])
	}
	return n, nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = slices.Delete(m.Content, i, i+2)
			return
		}
	}
}

// setScalar sets key to a plain string, appending the key when absent. A
// comment on the old value stays.
func setScalar(m *yaml.Node, key, value string) {
	if v := mapValue(m, key); v != nil {
		v.Kind, v.Tag, v.Value, v.Style, v.Content = yaml.ScalarNode, "!!str", value, 0, nil
		return
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// ensure returns key's value of the given kind, creating it (or replacing
// a null) when needed. An empty flow collection ({} or []) turns to block
// style so that what is added reads like the rest of the file.
func ensure(m *yaml.Node, key string, kind yaml.Kind, tag string) *yaml.Node {
	var k, v *yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			k, v = m.Content[i], m.Content[i+1]
		}
	}
	if v == nil {
		k, v = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, &yaml.Node{Kind: kind, Tag: tag}
		m.Content = append(m.Content, k, v)
	}
	if v.Kind != kind { // null ("key:" with nothing after it)
		v.Kind, v.Tag, v.Value, v.Content = kind, tag, "", nil
	}
	if len(v.Content) == 0 {
		v.Style &^= yaml.FlowStyle
		// "pools: [] # none yet": the comment stays on the key's line
		// rather than drifting to wherever the emitter puts it.
		if v.LineComment != "" && k.LineComment == "" {
			k.LineComment, v.LineComment = v.LineComment, ""
		}
	}
	return v
}

func ensureSeq(m *yaml.Node, key string) *yaml.Node {
	return ensure(m, key, yaml.SequenceNode, "!!seq")
}
func ensureMap(m *yaml.Node, key string) *yaml.Node { return ensure(m, key, yaml.MappingNode, "!!map") }

func poolNode(root *yaml.Node, name string) *yaml.Node {
	pools := mapValue(root, "pools")
	if pools == nil || pools.Kind != yaml.SequenceNode {
		return nil
	}
	for _, p := range pools.Content {
		if n := mapValue(p, "name"); n != nil && n.Value == name {
			return p
		}
	}
	return nil
}
