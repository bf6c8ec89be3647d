package convert

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var fuzzClusters = [][]corev1.IPFamily{
	nil,
	{corev1.IPv4Protocol},
	{corev1.IPv6Protocol},
	{corev1.IPv4Protocol, corev1.IPv6Protocol},
	{corev1.IPv6Protocol, corev1.IPv4Protocol},
}

// FuzzConvert feeds arbitrary bytes to the reader and the rewriter. Beyond
// "never panics" it checks the properties users rely on: a stream without
// rewrites comes back byte for byte (YAML), diagnostics point at real
// documents, and a successful output converts again to itself with no
// rewrites (no legacy field survives, nothing breaks the YAML).
//
//	go test ./convert -run '^$' -fuzz FuzzConvert -fuzztime 60s
func FuzzConvert(f *testing.F) {
	for _, dir := range []string{"testdata/in", "testdata/dir"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b, uint8(0))
				f.Add(b, uint8(3))
			}
		}
	}
	f.Add([]byte(svcYAML("  ipFamily: IPv6\n")), uint8(1))
	f.Add([]byte(svcYAML("  ipFamily: IPv6 # c\n  type: ClusterIP\n")), uint8(5))
	f.Add([]byte("---\n---\n...\n"), uint8(0))
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","spec":{"ipFamily":"IPv4"}}]}`), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		c := &Converter{
			Families: fuzzClusters[int(mode)%len(fuzzClusters)],
			DropOnly: mode/uint8(len(fuzzClusters))%2 == 1,
		}
		res := c.Convert("f", data)
		for _, d := range res.Diagnostics {
			if d.Doc < 1 || d.Message == "" {
				t.Fatalf("diagnostic without document or message: %+v", d)
			}
		}
		if res.Failed() {
			return
		}
		if res.Rewritten == 0 && !looksLikeJSON(data) && !bytes.Equal(res.Output, data) {
			t.Fatalf("nothing rewritten but output differs:\n%q\n%q", data, res.Output)
		}
		again := c.Convert("f", res.Output)
		if looksLikeJSON(res.Output) && !again.Failed() {
			// A top-level flow mapping edited as a tree prints as
			// JSON-looking YAML, which the next pass reads as JSON and
			// prints as block YAML: compare from there on.
			res, again = again, c.Convert("f", again.Output)
		}
		if again.Failed() {
			t.Fatalf("output does not convert again: %v\ninput %q\noutput %q", again.Diagnostics, data, res.Output)
		}
		if again.Rewritten != 0 || !bytes.Equal(again.Output, res.Output) {
			t.Fatalf("second pass rewrote %d Services:\ninput %q\nfirst %q\nsecond %q", again.Rewritten, data, res.Output, again.Output)
		}
	})
}

// FuzzMain drives the whole CLI, ResourceList detection included, over
// stdin: it must answer with an exit code, never a panic.
func FuzzMain(f *testing.F) {
	for _, p := range []string{"testdata/in/resourcelist.yaml", "testdata/in/resourcelist-error.yaml", "testdata/in/mixed.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, "")
		}
	}
	f.Add([]byte("apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nitems: 3\nresults: x\n"), "10.96.0.0/16")
	f.Fuzz(func(t *testing.T, data []byte, cidrs string) {
		var args []string
		if cidrs != "" {
			args = []string{"--service-cidrs", cidrs}
		}
		var stdout, stderr bytes.Buffer
		switch code := Main(args, bytes.NewReader(data), &stdout, &stderr); code {
		case ExitOK:
		case ExitInvalid, ExitUsage:
			if stderr.Len() == 0 {
				t.Fatalf("exit %d without a message", code)
			}
			if !strings.Contains(stderr.String(), "convert") && !strings.Contains(stderr.String(), ": ") {
				t.Fatalf("exit %d with an unhelpful message %q", code, stderr.String())
			}
		default:
			t.Fatalf("exit %d", code)
		}
	})
}
