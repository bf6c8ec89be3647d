package convert

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// asCLI makes the test binary behave as `dualstack-webhook convert` when
// started by the tests below, so that helm and the KRM exec runtime can run
// it as an external program without depending on the main package.
const asCLI = "DUALSTACK_WEBHOOK_CONVERT_TEST_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		args := os.Args[1:]
		if len(args) > 0 && args[0] == "convert" {
			args = args[1:]
		}
		os.Exit(Main(args, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// cliCommand returns a command that runs this test binary as the CLI.
func cliCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), asCLI+"=1")
	return cmd
}

// TestKRMExecFunction invokes the CLI the way kustomize runs an exec KRM
// function (kyaml fn/runtime/exec: the configured path and args, the
// ResourceList on stdin, the ResourceList read back from stdout, stderr
// passed through, a non-zero exit failing the build) and checks the
// returned ResourceList.
func TestKRMExecFunction(t *testing.T) {
	tests := map[string]struct {
		input       string
		wantExit    int
		wantItems   map[string]string // item name → expected spec YAML
		wantResults []string          // "severity: message" substrings in order
	}{
		"legacy Service rewritten, other kinds kept": {
			input: "testdata/in/resourcelist.yaml",
			wantItems: map[string]string{
				"legacy":    "# from an old chart\nipFamilies:\n    - IPv6\nipFamilyPolicy: SingleStack\nports:\n    - port: 80\n",
				"untouched": "replicas: 2\n",
			},
			wantResults: []string{"warning: spec.ipFamily: IPv6 was removed in Kubernetes 1.20"},
		},
		"functionConfig cluster rejects the IPv6 Service": {
			input:    "testdata/in/resourcelist-error.yaml",
			wantExit: ExitInvalid,
			wantItems: map[string]string{
				"legacy-v6": "ipFamily: IPv6\nports:\n    - port: 80\n",
				"generated": "ipFamilies:\n    - IPv4\nipFamilyPolicy: SingleStack\nports:\n    - port: 80\n",
			},
			wantResults: []string{
				`error: Invalid value: "IPv6": only the following families are allowed: IPv4`,
				"warning: spec.ipFamily: IPv4 was removed",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(tc.input)
			if err != nil {
				t.Fatal(err)
			}
			cmd := cliCommand(t, "convert")
			cmd.Stdin = bytes.NewReader(in)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantExit {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.wantExit, stderr.String())
			}
			var rl struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Items      []struct {
					Metadata struct {
						Name        string            `yaml:"name"`
						Annotations map[string]string `yaml:"annotations"`
					} `yaml:"metadata"`
					Spec yaml.Node `yaml:"spec"`
				} `yaml:"items"`
				Results []struct {
					Message  string `yaml:"message"`
					Severity string `yaml:"severity"`
				} `yaml:"results"`
			}
			if err := yaml.Unmarshal(stdout.Bytes(), &rl); err != nil {
				t.Fatalf("stdout is not YAML: %v\n%s", err, stdout.String())
			}
			if rl.APIVersion != krmGroupVersion || rl.Kind != krmKind {
				t.Errorf("answered %s/%s, want a ResourceList", rl.APIVersion, rl.Kind)
			}
			if len(rl.Items) != len(tc.wantItems) {
				t.Fatalf("%d items, want %d", len(rl.Items), len(tc.wantItems))
			}
			for _, it := range rl.Items {
				spec, err := yaml.Marshal(&it.Spec)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := string(spec), tc.wantItems[it.Metadata.Name]; got != want {
					t.Errorf("item %s spec:\n%s\nwant:\n%s", it.Metadata.Name, got, want)
				}
				// kustomize maps items back to files by these.
				if p := it.Metadata.Annotations["internal.config.kubernetes.io/path"]; p == "" && it.Metadata.Name != "generated" {
					t.Errorf("item %s lost its path annotation", it.Metadata.Name)
				}
			}
			if len(rl.Results) != len(tc.wantResults) {
				t.Fatalf("results %+v, want %d", rl.Results, len(tc.wantResults))
			}
			for i, want := range tc.wantResults {
				if got := rl.Results[i].Severity + ": " + rl.Results[i].Message; !strings.HasPrefix(got, want) {
					t.Errorf("result %d = %q, want prefix %q", i, got, want)
				}
			}
		})
	}
}

// TestHelmPostRenderer renders a small chart with legacy Services through
// `helm template --post-renderer` using the helm the e2e tooling builds.
func TestHelmPostRenderer(t *testing.T) {
	helm, err := filepath.Abs(filepath.Join("..", ".k8s-bin", "current", "helm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(helm); err != nil {
		t.Skipf("helm not available at %s (built by e2e/bin/install.sh): %v", helm, err)
	}
	chart := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(chart, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Chart.yaml", "apiVersion: v2\nname: legacy\nversion: 0.1.0\n")
	write("values.yaml", "family: IPv6\n")
	write("templates/service.yaml", `apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  ipFamily: {{ .Values.family }}
  type: LoadBalancer
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 9376
`)
	write("templates/configmap.yaml", `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  family: {{ .Values.family | quote }}
`)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(extra ...string) (string, string, error) {
		args := append([]string{"template", "rel", chart, "--post-renderer", self, "--post-renderer-args", "convert"}, extra...)
		cmd := exec.Command(helm, args...)
		cmd.Env = append(os.Environ(), asCLI+"=1", "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, stderr, err := run()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr)
	}
	for _, want := range []string{
		"kind: Service\nmetadata:\n  name: rel-web\nspec:\n  ipFamilies:\n    - IPv6\n  ipFamilyPolicy: SingleStack\n  type: LoadBalancer\n",
		"kind: ConfigMap\n",
		`family: "IPv6"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ipFamily:") {
		t.Errorf("legacy field survived:\n%s", out)
	}
	// Helm keeps a post-renderer's stderr to itself unless it fails, so
	// the rewrite warning is not expected here.

	// An invalid value fails the release instead of rendering.
	out, stderr, err = run("--set", "family=IPv7")
	if err == nil {
		t.Fatalf("helm template succeeded with ipFamily IPv7:\n%s", out)
	}
	if !strings.Contains(stderr, `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4, IPv6`) {
		t.Errorf("helm's error does not carry the field error:\n%s", stderr)
	}
}
