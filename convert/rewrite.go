package convert

import (
	"bytes"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// rewrite is the edit one legacy Service needs: drop spec.ipFamily and, in
// its place, add what it meant (docs/dualstack-rules.md §3.5).
type rewrite struct {
	scope      *yaml.Node // the Service: its own sequences show the indent style
	spec       *yaml.Node // the spec mapping
	key, value *yaml.Node // the ipFamily pair
	// family is the legacy value; "" for ExternalName Services, where the
	// field is only dropped.
	family string
	// policy / families: write ipFamilyPolicy: SingleStack / ipFamilies:
	// [family]. policyAt / familiesAt are the existing value nodes when the
	// key is present but empty (null, []), to be filled in place.
	policy, families     bool
	policyAt, familiesAt *yaml.Node
}

func scalarNode(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

// applyNode performs the rewrite on the node tree (the path for JSON input
// and for YAML shapes editLines does not handle).
func (rw *rewrite) applyNode() {
	i := -1
	for j := 0; j+1 < len(rw.spec.Content); j += 2 {
		if rw.spec.Content[j] == rw.key {
			i = j
		}
	}
	if i < 0 {
		return
	}
	var add []*yaml.Node
	if rw.families {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{scalarNode(rw.family)}}
		if rw.familiesAt != nil {
			fillNode(rw.familiesAt, seq)
		} else {
			add = append(add, scalarNode("ipFamilies"), seq)
		}
	}
	if rw.policy {
		v := scalarNode("SingleStack")
		if rw.policyAt != nil {
			fillNode(rw.policyAt, v)
		} else {
			add = append(add, scalarNode("ipFamilyPolicy"), v)
		}
	}
	// Comments written around the legacy pair stay where it was.
	head, line := rw.key.HeadComment, rw.value.LineComment
	if line == "" {
		line = rw.key.LineComment
	}
	foot := strings.TrimSpace(rw.key.FootComment + "\n" + rw.value.FootComment)
	rest := rw.spec.Content[i+2:]
	switch {
	case len(add) > 0:
		add[0].HeadComment = head
		add[0].LineComment = line
		add[len(add)-2].FootComment = foot
	case len(rest) > 0:
		rest[0].HeadComment = joinComments(head, line, foot, rest[0].HeadComment)
	default:
		rw.spec.FootComment = joinComments(head, line, foot, rw.spec.FootComment)
	}
	rw.spec.Content = append(append(rw.spec.Content[:i:i], add...), rest...)
}

func joinComments(cs ...string) string {
	var keep []string
	for _, c := range cs {
		if c = strings.TrimSpace(c); c != "" {
			keep = append(keep, c)
		}
	}
	return strings.Join(keep, "\n")
}

// fillNode replaces an existing value node's content, keeping its comments.
func fillNode(dst, src *yaml.Node) {
	dst.Kind, dst.Tag, dst.Value, dst.Style, dst.Content, dst.Anchor = src.Kind, src.Tag, src.Value, 0, src.Content, ""
}

// editLines applies every rewrite as a replacement of the one line that
// holds `ipFamily: X`, leaving all other bytes alone. It reports false when
// a rewrite does not fit that shape (flow style, multi-line or tagged
// values, keys present but null, ...); the caller then edits the node tree.
func editLines(text []byte, rws []*rewrite) ([]byte, bool) {
	lines := splitLines(text)
	repl := make(map[int][]byte, len(rws))
	for _, rw := range rws {
		ln, b, ok := rw.lineEdit(lines)
		if !ok {
			return nil, false
		}
		if _, dup := repl[ln]; dup {
			return nil, false
		}
		repl[ln] = b
	}
	var out bytes.Buffer
	out.Grow(len(text) + 64*len(rws))
	for i, l := range lines {
		if b, ok := repl[i+1]; ok {
			out.Write(b)
			continue
		}
		out.Write(l)
	}
	return out.Bytes(), true
}

// splitLines cuts text into lines that keep their line endings.
func splitLines(text []byte) [][]byte {
	var lines [][]byte
	for len(text) > 0 {
		i := bytes.IndexByte(text, '\n')
		if i < 0 {
			lines = append(lines, text)
			break
		}
		lines = append(lines, text[:i+1])
		text = text[i+1:]
	}
	return lines
}

// lineEdit returns the 1-based line number of the legacy pair and the
// bytes that replace that line.
func (rw *rewrite) lineEdit(lines [][]byte) (int, []byte, bool) {
	k, v := rw.key, rw.value
	if rw.policyAt != nil || rw.familiesAt != nil ||
		rw.spec.Style&yaml.FlowStyle != 0 ||
		v.Kind != yaml.ScalarNode || k.Kind != yaml.ScalarNode || k.Line != v.Line ||
		k.Anchor != "" || v.Anchor != "" || k.Line < 1 || k.Line > len(lines) {
		return 0, nil, false
	}
	full := string(lines[k.Line-1])
	body := strings.TrimRight(full, "\r\n")
	eol := full[len(body):]
	col := k.Column - 1
	if col < 0 || col > len(body) || strings.Trim(body[:col], " ") != "" {
		return 0, nil, false
	}
	indent, rest := body[:col], body[col:]
	var keyOK bool
	for _, tok := range []string{"ipFamily", `"ipFamily"`, "'ipFamily'"} {
		if after, ok := strings.CutPrefix(rest, tok); ok {
			rest, keyOK = after, true
			break
		}
	}
	rest = strings.TrimLeft(rest, " \t")
	if !keyOK || !strings.HasPrefix(rest, ":") {
		return 0, nil, false
	}
	rest = rest[1:]
	comment := v.LineComment
	if comment == "" {
		comment = k.LineComment
	}
	gap := ""
	if comment != "" {
		trimmed := strings.TrimRight(rest, " \t")
		if !strings.HasSuffix(trimmed, comment) {
			return 0, nil, false
		}
		rest = trimmed[:len(trimmed)-len(comment)]
		gap = rest[len(strings.TrimRight(rest, " \t")):]
		if gap == "" {
			gap = " "
		}
	}
	if !isScalarToken(strings.TrimSpace(rest), v) {
		return 0, nil, false
	}

	// ipFamilies before ipFamilyPolicy: the order of `kubectl get -o
	// yaml` and of the engine's warning.
	var out []string
	if rw.families {
		out = append(out, indent+"ipFamilies:", indent+strings.Repeat(" ", seqIndent(rw.scope))+"- "+rw.family)
	}
	if rw.policy {
		out = append(out, indent+"ipFamilyPolicy: SingleStack")
	}
	if comment != "" {
		if len(out) == 0 {
			out = append(out, indent+comment)
		} else {
			out[0] += gap + comment
		}
	}
	if len(out) == 0 {
		return k.Line, nil, true // the line goes away
	}
	nl := eol
	if nl == "" {
		nl = "\n"
	}
	return k.Line, []byte(strings.Join(out, nl) + eol), true
}

// isScalarToken reports whether tok is exactly how the one-line scalar v
// is written in the source.
func isScalarToken(tok string, v *yaml.Node) bool {
	switch v.Style {
	case 0:
		return tok == v.Value && (v.ShortTag() == "!!str" || v.ShortTag() == "!!null")
	case yaml.SingleQuotedStyle:
		return tok == "'"+strings.ReplaceAll(v.Value, "'", "''")+"'"
	case yaml.DoubleQuotedStyle:
		s, err := strconv.Unquote(tok)
		return err == nil && strings.HasPrefix(tok, `"`) && s == v.Value
	default:
		return false
	}
}

// seqIndent is how far the Service's own block sequences sit to the right
// of their key: 0 for `kubectl get -o yaml` style ("ports:\n- port: 80"),
// usually 2 for hand-written manifests ("ports:\n  - port: 80"). The new
// ipFamilies list follows the document's habit; 0 when it has none.
func seqIndent(n *yaml.Node) int {
	d, _ := findSeqIndent(n, 0)
	return d
}

func findSeqIndent(n *yaml.Node, depth int) (int, bool) {
	if n == nil || depth > 64 {
		return 0, false
	}
	for i := 0; i+1 < len(n.Content) && n.Kind == yaml.MappingNode; i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 && v.Line > k.Line {
			if d := v.Column - k.Column; d >= 0 && d <= 8 {
				return d, true
			}
		}
		if d, ok := findSeqIndent(v, depth+1); ok {
			return d, true
		}
	}
	for _, c := range n.Content {
		if n.Kind == yaml.SequenceNode {
			if d, ok := findSeqIndent(c, depth+1); ok {
				return d, true
			}
		}
	}
	return 0, false
}
