package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	docRef     = regexp.MustCompile(`docs/([a-z0-9-]+\.md)(#[a-z0-9-]+)?`)
	sectionRef = regexp.MustCompile(`dualstack-rules\.md\)?,? ?(?:§|section )(\d+(?:\.\d+)?)`)
	heading    = regexp.MustCompile(`(?m)^#{2,3} (\d+(?:\.\d+)?)\.? `)
	mdHeading  = regexp.MustCompile(`(?m)^#{1,4} (.+)$`)
)

// TestDocReferences keeps the repository's references to its own documents
// followable: every docs/<file>.md named in code, charts and docs exists,
// every #anchor is a heading of that file, and every section cited as
// "dualstack-rules.md §N.M" is a numbered heading there.
func TestDocReferences(t *testing.T) {
	rules, err := os.ReadFile("docs/dualstack-rules.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(rules), -1) {
		sections[m[1]] = true
	}
	anchors := map[string]map[string]bool{}
	anchorsOf := func(doc string) map[string]bool {
		if a, ok := anchors[doc]; ok {
			return a
		}
		a := map[string]bool{}
		b, err := os.ReadFile(filepath.Join("docs", doc))
		if err == nil {
			for _, m := range mdHeading.FindAllStringSubmatch(string(b), -1) {
				a[slug(m[1])] = true
			}
		}
		anchors[doc] = a
		return a
	}
	err = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".k8s-bin", "_artifacts", "testdata", "dist", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".go", ".md", ".yaml", ".tpl", ".txt", ".sh":
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		text := string(b)
		for _, m := range docRef.FindAllStringSubmatch(text, -1) {
			if _, err := os.Stat(filepath.Join("docs", m[1])); err != nil {
				t.Errorf("%s: docs/%s does not exist", p, m[1])
				continue
			}
			if m[2] != "" && !anchorsOf(m[1])[m[2][1:]] {
				t.Errorf("%s: docs/%s has no heading for %s", p, m[1], m[2])
			}
		}
		for _, m := range sectionRef.FindAllStringSubmatch(text, -1) {
			if !sections[m[1]] {
				t.Errorf("%s: cites dualstack-rules.md §%s, which has no such section", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// slug is the anchor a Markdown renderer derives from a heading.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}
