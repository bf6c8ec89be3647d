package convert

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites the golden files: go test ./convert -run TestGolden -update
var update = flag.Bool("update", false, "rewrite testdata/golden/* from the current output")

// TestGolden runs the CLI entry point on the inputs under testdata/in and
// compares stdout and stderr byte for byte with testdata/golden.
func TestGolden(t *testing.T) {
	tests := map[string]struct {
		args     []string
		stdin    string // file whose content is fed on stdin
		wantExit int
	}{
		"docs-v1.21 legacy manifests, translation only": {
			args: []string{"-f", "testdata/in/docs-v1.21-validate-dual-stack.yaml"},
		},
		"docs-v1.21 legacy manifests on a dual-stack cluster": {
			args: []string{"-f", "testdata/in/docs-v1.21-validate-dual-stack.yaml", "--service-cidrs", "10.96.0.0/16,fd00:10:96::/108"},
		},
		"docs-v1.21 legacy manifests on an IPv4-only cluster": {
			args:     []string{"-f", "testdata/in/docs-v1.21-validate-dual-stack.yaml", "--service-cidrs", "10.96.0.0/16"},
			wantExit: ExitInvalid,
		},
		"docs-v1.21 legacy manifests of existing Services, --drop-only": {
			args: []string{"-f", "testdata/in/docs-v1.21-validate-dual-stack.yaml", "--drop-only"},
		},
		"docs-v1.16 alpha concept page examples": {
			args: []string{"-f", "testdata/in/docs-v1.16-dual-stack.yaml"},
		},
		"multi-document stream with comments and other kinds": {
			args: []string{"-f", "testdata/in/mixed.yaml"},
		},
		"the same stream on stdin, as helm --post-renderer feeds it": {
			stdin: "testdata/in/mixed.yaml",
		},
		"v1 List": {
			args: []string{"-f", "testdata/in/list.yaml"},
		},
		"JSON stream printed as YAML": {
			args: []string{"-f", "testdata/in/svc.json"},
		},
		"flow style, ExternalName, fields already set, headless, null, no final newline": {
			args: []string{"-f", "testdata/in/shapes.yaml"},
		},
		"CRLF line endings": {
			args: []string{"-f", "testdata/in/crlf.yaml"},
		},
		"invalid documents": {
			args:     []string{"-f", "testdata/in/errors.yaml"},
			wantExit: ExitInvalid,
		},
		"several files and a directory": {
			args: []string{"-f", "testdata/in/list.yaml", "-f", "testdata/dir", "-f", "testdata/in/svc.json"},
		},
		"KRM ResourceList": {
			stdin: "testdata/in/resourcelist.yaml",
		},
		"KRM ResourceList with functionConfig CIDRs and an error": {
			stdin:    "testdata/in/resourcelist-error.yaml",
			wantExit: ExitInvalid,
		},
		"KRM ResourceList with --service-cidrs overriding functionConfig": {
			args:  []string{"--service-cidrs", "fd00:10:96::/108,10.96.0.0/16"},
			stdin: "testdata/in/resourcelist-error.yaml",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdin []byte
			if tc.stdin != "" {
				var err error
				if stdin, err = os.ReadFile(tc.stdin); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			code := Main(tc.args, bytes.NewReader(stdin), &stdout, &stderr)
			if code != tc.wantExit {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tc.wantExit, stderr.String())
			}
			base := filepath.Join("testdata", "golden", strings.NewReplacer(" ", "-", ",", "", "/", "-", "+", "").Replace(name))
			golden(t, base+".stdout", stdout.Bytes())
			golden(t, base+".stderr", stderr.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
