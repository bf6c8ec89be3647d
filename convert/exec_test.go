package convert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
		// Like the real binary, only `convert` converts: a caller that
		// forgot the subcommand (a plugin manifest, a kustomize function
		// config) must fail here as it would there.
		args := os.Args[1:]
		if len(args) == 0 || args[0] != "convert" {
			fmt.Fprintf(os.Stderr, "dualstack-webhook: want the convert subcommand, got %q\n", args)
			os.Exit(2)
		}
		os.Exit(Main(args[1:], os.Stdin, os.Stdout, os.Stderr))
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

// tool finds an external program these tests drive: $env, else the file
// under ../.k8s-bin that e2e/bin/install.sh links (rel), else $PATH (name).
// Without it the test skips — or fails under E2E_REQUIRED=1, as in `make
// test`, so that CI cannot go green by skipping.
func tool(t *testing.T, env, name string, rel ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	for _, r := range rel {
		if p, err := filepath.Abs(filepath.Join("..", ".k8s-bin", r)); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil && name != "helm" { // helm on $PATH may be either major
		return p
	}
	what := name
	if len(rel) > 0 {
		what = filepath.Base(rel[0])
	}
	msg := fmt.Sprintf("%s not found ($%s, ../.k8s-bin/%s): run e2e/bin/install.sh", what, env, strings.Join(rel, ", ../.k8s-bin/"))
	if os.Getenv("E2E_REQUIRED") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestHelmPostRenderer renders a small chart with legacy Services through
// the real helm of both majors: Helm 3 runs an executable given as
// --post-renderer; Helm 4 runs only post-renderer plugins, so there it is
// the plugin in ../plugins/dualstack-convert, installed from the repository
// path and found by its name.
func TestHelmPostRenderer(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, major := range []string{"3", "4"} {
		t.Run("helm"+major, func(t *testing.T) {
			if major == "3" {
				testHelmPostRenderer(t, tool(t, "HELM", "helm", "current/helm"), nil, self)
				return
			}
			helm := tool(t, "HELM4", "helm", "extra/helm4")
			// The plugin runs `dualstack-webhook convert` from $PATH: this
			// test binary under that name acts as the CLI (asCLI).
			bin := t.TempDir()
			if err := os.Symlink(self, filepath.Join(bin, "dualstack-webhook")); err != nil {
				t.Fatal(err)
			}
			env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HELM_DATA_HOME=" + t.TempDir()}
			plugin, err := filepath.Abs(filepath.Join("..", "plugins", "dualstack-convert"))
			if err != nil {
				t.Fatal(err)
			}
			install := exec.Command(helm, "plugin", "install", plugin)
			install.Env = append(os.Environ(), env...)
			if out, err := install.CombinedOutput(); err != nil {
				t.Fatalf("helm plugin install %s: %v\n%s", plugin, err, out)
			}
			list := exec.Command(helm, "plugin", "list")
			list.Env = install.Env
			if out, err := list.CombinedOutput(); err != nil || !strings.Contains(string(out), "postrenderer/v1") {
				t.Fatalf("helm plugin list: %v\n%s", err, out)
			}
			testHelmPostRenderer(t, helm, env, "dualstack-convert")
		})
	}
}

// testHelmPostRenderer runs `helm template --post-renderer renderer` (an
// executable for Helm 3, a plugin name for Helm 4) with env added.
func testHelmPostRenderer(t *testing.T, helm string, env []string, renderer string) {
	t.Helper()
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
	run := func(extra ...string) (string, string, error) {
		// Helm 3 passes the executable the args as given; the plugin's
		// command already says convert.
		args := []string{"template", "rel", chart, "--post-renderer", renderer}
		if env == nil {
			args = append(args, "--post-renderer-args", "convert")
		}
		args = append(args, extra...)
		cmd := exec.Command(helm, args...)
		cmd.Env = append(os.Environ(), asCLI+"=1", "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		cmd.Env = append(cmd.Env, env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, stderr, err := run()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr)
	}
	// Helm 4 re-indents what a post-renderer returns, so the documents are
	// compared decoded.
	type doc struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec map[string]any `yaml:"spec"`
		Data map[string]any `yaml:"data"`
	}
	got := map[string]doc{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var d doc
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("helm output is not YAML: %v\n%s", err, out)
		}
		got[d.Kind+"/"+d.Metadata.Name] = d
	}
	svc := got["Service/rel-web"].Spec
	if fmt.Sprint(svc["ipFamilies"]) != "[IPv6]" || svc["ipFamilyPolicy"] != "SingleStack" || svc["type"] != "LoadBalancer" {
		t.Errorf("Service not converted: spec %v\n%s", svc, out)
	}
	if _, ok := svc["ipFamily"]; ok {
		t.Errorf("legacy field survived:\n%s", out)
	}
	if cm := got["ConfigMap/rel-config"].Data; cm["family"] != "IPv6" {
		t.Errorf("ConfigMap not passed through: data %v\n%s", cm, out)
	}
	// Helm keeps a post-renderer's stderr to itself unless it fails, so
	// the rewrite warning is not expected here.

	// --post-renderer-args reach convert: the Service's IPv6 against an
	// IPv4-only cluster fails, against a dual-stack one passes.
	if out, _, err := run("--post-renderer-args", "--service-cidrs=10.96.0.0/16"); err == nil {
		t.Errorf("helm template with --service-cidrs of an IPv4-only cluster accepted an IPv6 Service:\n%s", out)
	}
	if _, stderr, err := run("--post-renderer-args", "--service-cidrs=10.96.0.0/16,fd00:10:96::/108"); err != nil {
		t.Errorf("helm template with dual-stack --service-cidrs: %v\n%s", err, stderr)
	}

	// An invalid value fails the release instead of rendering.
	out, stderr, err = run("--set", "family=IPv7")
	if err == nil {
		t.Fatalf("helm template succeeded with ipFamily IPv7:\n%s", out)
	}
	if env != nil {
		// Helm 4 (4.3) discards a post-renderer plugin's stderr: only the
		// failure itself reaches the user (docs/convert.md).
		if !strings.Contains(stderr, `plugin "dualstack-convert" exited with error`) {
			t.Errorf("helm's error does not name the failed plugin:\n%s", stderr)
		}
		return
	}
	if !strings.Contains(stderr, `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4, IPv6`) {
		t.Errorf("helm's error does not carry the field error:\n%s", stderr)
	}
}

// TestKustomizeBuild runs a real `kustomize build --enable-alpha-plugins
// --enable-exec` with convert configured as an exec transformer. kustomize
// v5 is built by e2e/bin/install.sh (kubectl's embedded kustomize has no
// --enable-exec).
func TestKustomizeBuild(t *testing.T) {
	kustomize := tool(t, "KUSTOMIZE", "kustomize", "extra/kustomize")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"kustomization.yaml": "resources:\n- legacy.yaml\ntransformers:\n- dualstack-convert.yaml\n",
		"dualstack-convert.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: dualstack-convert
  annotations:
    config.kubernetes.io/function: |
      exec:
        path: ` + self + `
        args: [convert]
data:
  serviceCIDRs: 10.96.0.0/16,fd00:10:96::/108
`,
		"legacy.yaml": svcYAML("  ipFamily: IPv6\n  type: LoadBalancer\n  ports:\n  - port: 80\n") +
			"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  a: b\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func() (string, string, error) {
		cmd := exec.Command(kustomize, "build", "--enable-alpha-plugins", "--enable-exec", dir)
		cmd.Env = append(os.Environ(), asCLI+"=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, stderr, err := build()
	if err != nil {
		t.Fatalf("kustomize build: %v\n%s", err, stderr)
	}
	for _, want := range []string{"ipFamilies:\n  - IPv6\n  ipFamilyPolicy: SingleStack\n", "name: other\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ipFamily:") {
		t.Errorf("legacy field survived:\n%s", out)
	}

	bad := strings.Replace(files["legacy.yaml"], "ipFamily: IPv6", "ipFamily: IPv7", 1)
	if err := os.WriteFile(filepath.Join(dir, "legacy.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = build()
	if err == nil {
		t.Fatalf("kustomize build succeeded with ipFamily IPv7:\n%s", out)
	}
	if !strings.Contains(stderr, `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4, IPv6`) {
		t.Errorf("kustomize's error output lacks the field error:\n%s", stderr)
	}
}

// TestBinary builds the real command and runs its convert subcommand, so
// the dispatch in main.go is covered, then uses that binary as helm's
// post-renderer when helm is available.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "dualstack-webhook")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "convert", "-f", "testdata/in/docs-v1.21-validate-dual-stack.yaml", "--service-cidrs", "fd00:10:96::/108,10.96.0.0/16")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	want, err := os.ReadFile("testdata/golden/docs-v1.21-legacy-manifests-on-a-dual-stack-cluster.stdout")
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(want) {
		t.Errorf("binary output differs from the golden file:\n%s", stdout.String())
	}
	cmd = exec.Command(bin, "convert", "--service-cidrs", "10.96.0.0/16")
	cmd.Stdin = strings.NewReader(svcYAML("  ipFamily: IPv6\n"))
	stdout.Reset()
	stderr.Reset()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var ee *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != ExitInvalid {
		t.Errorf("exit %v, want status %d", err, ExitInvalid)
	}
	if got := stderr.String(); !strings.HasPrefix(got, `<stdin>:1: spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4`) {
		t.Errorf("stderr %q", got)
	}

	helm := tool(t, "HELM", "helm", "current/helm")
	chart := t.TempDir()
	for name, content := range map[string]string{
		"Chart.yaml":             "apiVersion: v2\nname: legacy\nversion: 0.1.0\n",
		"templates/service.yaml": svcYAML("  ipFamily: IPv4\n  ports:\n  - port: 80\n"),
	} {
		p := filepath.Join(chart, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hc := exec.Command(helm, "template", "rel", chart, "--post-renderer", bin, "--post-renderer-args", "convert")
	hc.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := hc.CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "spec:\n  ipFamilies:\n  - IPv4\n  ipFamilyPolicy: SingleStack\n  ports:\n") {
		t.Errorf("helm output not converted:\n%s", out)
	}
}
