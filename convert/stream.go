package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	yaml "go.yaml.in/yaml/v3"
)

// section is one `---`-delimited piece of a YAML stream, kept as the exact
// input bytes so that untouched documents are written back byte for byte.
type section struct {
	text []byte
	// line is the 1-based line of text[0] in the whole file, to turn
	// parser line numbers (relative to the section) back into file lines.
	line int
}

// splitYAML cuts a YAML stream at document separator lines the way kubectl
// (apimachinery's YAMLReader) and Helm do: a line that starts with "---"
// followed by nothing, blanks or a comment. The separator line stays at
// the head of the section it opens. Concatenating the sections gives the
// input back exactly.
func splitYAML(data []byte) []section {
	var out []section
	start, startLine, line := 0, 1, 1
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos + 1
		}
		if isSeparator(data[pos:end]) && pos > start && !onlyDirectives(data[start:pos]) {
			out = append(out, section{text: data[start:pos], line: startLine})
			start, startLine = pos, line
		}
		pos = end
		line++
	}
	if start < len(data) {
		out = append(out, section{text: data[start:], line: startLine})
	}
	return out
}

// onlyDirectives reports whether text holds nothing but directives
// (%YAML, %TAG), comments and blank lines: those belong to the document the
// next "---" opens, so the stream is not cut there.
func onlyDirectives(text []byte) bool {
	seen := false
	for _, l := range bytes.Split(text, []byte("\n")) {
		l = bytes.TrimSpace(l)
		switch {
		case len(l) == 0 || l[0] == '#':
		case l[0] == '%':
			seen = true
		default:
			return false
		}
	}
	return seen
}

// isSeparator reports whether a line (with its line ending) is a YAML
// document start marker. "--- !tag" or "--- {a: b}" also start a document;
// the YAML parser reads what follows the marker.
func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := line[3:]
	return len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r' || rest[0] == '\n'
}

// looksLikeJSON: the stream's first meaningful byte opens a JSON object.
// A YAML flow mapping also starts with "{"; callers fall back to YAML when
// the JSON decoder disagrees.
func looksLikeJSON(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	data = bytes.TrimLeft(data, " \t\r\n")
	return len(data) > 0 && data[0] == '{'
}

// splitJSON cuts a stream of concatenated JSON values (one object, or
// several as `kubectl get -o json` piped together) into raw values.
func splitJSON(data []byte) ([]json.RawMessage, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []json.RawMessage
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// maxJSONDepth bounds nesting so that hostile input cannot exhaust the
// stack; encoding/json's own limit is 10000, Kubernetes objects need < 30.
const maxJSONDepth = 1000

// jsonToNode turns one JSON value into a YAML node tree in key order, so a
// JSON manifest can be edited and printed as block YAML like the rest.
// yaml.v3 cannot read every JSON text itself (it rejects the "\/" escape).
func jsonToNode(raw []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return jsonValue(dec, 0)
}

func jsonValue(dec *json.Decoder, depth int) (*yaml.Node, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("JSON nested deeper than %d levels", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		if v == '[' {
			n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		}
		for dec.More() {
			if v == '{' {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string) // object keys are always strings
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k})
			}
			c, err := jsonValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}, nil
	case json.Number:
		tag := "!!int"
		if bytes.ContainsAny([]byte(v), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(v)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(v)}, nil
	default: // nil
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
}

// parseSection parses one YAML section. It returns (nil, nil) for a section
// without a document (only comments, blanks or a separator). Parser panics
// are turned into errors: the input is untrusted and the tool must never
// crash on it.
func parseSection(text []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(text))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		// "..." followed by a bare document: kubectl would not split it
		// either; refuse rather than guess.
		if err == nil {
			err = errors.New(`a second document follows "..." without a "---" line`)
		}
		return nil, err
	}
	if n.Kind == 0 || (n.Kind == yaml.DocumentNode && len(n.Content) == 0) {
		return nil, nil
	}
	return &n, nil
}
