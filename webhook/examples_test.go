package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite the documented answers in ../examples/README.md")

// blockRE finds `<!-- response|patch: FILE PATH -->` followed by a ```json
// fenced block.
var blockRE = regexp.MustCompile("(?s)<!-- (response|patch): (\\S+) (\\S+) -->\n```json\n(.*?)```")

// TestExamplesREADME posts every example the README documents to the
// handler as `serve --dev` configures it and compares the answer with the
// documented one, so the docs cannot rot.
func TestExamplesREADME(t *testing.T) {
	const readme = "../examples/README.md"
	doc, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(file, path string) []byte {
		// A fresh `serve --dev` per example: pinning on, memory store, the
		// static band of the dev CIDRs, nothing reserved yet but the address
		// default/kubernetes holds on every cluster.
		cidrs := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
		pools, err := alloc.Compile(nil, cidrs)
		if err != nil {
			t.Fatal(err)
		}
		a, err := alloc.New(memory.New(), pools, alloc.Options{External: alloc.KubernetesServiceHolder(cidrs)})
		if err != nil {
			t.Fatal(err)
		}
		h, err := NewHandler(Options{Evaluate: evaluateReal, Families: StaticFamilies{corev1.IPv4Protocol, corev1.IPv6Protocol}, Allocator: a})
		if err != nil {
			t.Fatal(err)
		}
		body, err := os.ReadFile(filepath.Join("../examples", file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: HTTP %d %s", file, path, rec.Code, rec.Body.Bytes())
		}
		return rec.Body.Bytes()
	}
	matches := blockRE.FindAllSubmatchIndex(doc, -1)
	if len(matches) < 5 {
		t.Fatalf("README documents %d answers, want at least 5", len(matches))
	}
	var out bytes.Buffer
	last := 0
	for _, m := range matches {
		what, file, path := string(doc[m[2]:m[3]]), string(doc[m[4]:m[5]]), string(doc[m[6]:m[7]])
		documented := doc[m[8]:m[9]]
		got := answer(file, path)
		if what == "patch" {
			var r struct {
				Response struct {
					Patch string `json:"patch"`
				} `json:"response"`
			}
			_ = json.Unmarshal(got, &r)
			got, _ = base64.StdEncoding.DecodeString(r.Response.Patch)
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, got, "", "  "); err != nil {
			t.Fatalf("%s %s: %v", file, path, err)
		}
		pretty.WriteByte('\n')
		if *update {
			out.Write(doc[last:m[8]])
			out.Write(pretty.Bytes())
			last = m[9]
			continue
		}
		if !jsonEqual(documented, got) {
			t.Errorf("%s %s %s differs from the README (run with -update if intended):\n got %s\nwant %s", what, file, path, pretty.Bytes(), documented)
		}
	}
	if *update {
		out.Write(doc[last:])
		if err := os.WriteFile(readme, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The last sentence of the README: /validate agrees.
	for file, allowed := range map[string]bool{"admissionreview-plain.json": true, "admissionreview-legacy.json": true, "admissionreview-invalid.json": false} {
		var r struct {
			Response struct {
				Allowed bool `json:"allowed"`
			} `json:"response"`
		}
		_ = json.Unmarshal(answer(file, "/validate"), &r)
		if r.Response.Allowed != allowed {
			t.Errorf("/validate %s: allowed = %v, want %v", file, r.Response.Allowed, allowed)
		}
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
