package framework

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RootModule is the module path of the webhook; RepoRoot looks for its go.mod.
const RootModule = "github.com/dualstack-webhook/dualstack-webhook"

// Environment variables the harness reads.
const (
	// EnvAssets names the folder holding etcd, kube-apiserver, kubectl, ...
	EnvAssets = "KUBEBUILDER_ASSETS"
	// EnvRequired, when "1" or "true", turns a missing prerequisite into a
	// test failure: `make test` sets it so CI can never pass by skipping.
	EnvRequired = "E2E_REQUIRED"
	// EnvExisting, when "true", runs the suites against KUBECONFIG's cluster.
	EnvExisting = "E2E_USE_EXISTING_CLUSTER"
	// EnvWebhookBin points at a prebuilt dualstack-webhook binary (make builds
	// it once); without it the harness builds one with `go build`.
	EnvWebhookBin = "E2E_WEBHOOK_BIN"
	// EnvKeepArtifacts keeps logs even when everything passed.
	EnvKeepArtifacts = "E2E_KEEP_ARTIFACTS"
)

// Required reports whether missing prerequisites must fail rather than skip.
func Required() bool { return truthy(os.Getenv(EnvRequired)) }

// UseExistingCluster reports whether the suites target KUBECONFIG's cluster.
func UseExistingCluster() bool { return truthy(os.Getenv(EnvExisting)) }

func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// RepoRoot walks up from the working directory to the folder whose go.mod
// declares RootModule. Tests run in their package folder, so this finds the
// checkout whatever the package depth.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == RootModule {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for %s above the working directory", RootModule)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// AssetBinaries are the binaries the local control plane needs.
var AssetBinaries = []string{"etcd", "kube-apiserver", "kubectl"}

// AssetsDir returns the folder with the control-plane binaries: $KUBEBUILDER_ASSETS
// or <repo>/.k8s-bin/current, checking that the needed binaries are there.
func AssetsDir() (string, error) {
	dir := os.Getenv(EnvAssets)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".k8s-bin", "current")
	}
	var missing []string
	for _, b := range AssetBinaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return dir, fmt.Errorf("control-plane binaries %v missing in %s: run e2e/bin/install.sh (or `make e2e-bin`), or set %s",
			missing, dir, EnvAssets)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return abs, nil
}

// Binary returns the path of one asset (e.g. "kubectl", "kube-controller-manager").
func Binary(name string) (string, error) {
	dir, err := AssetsDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not in %s: run e2e/bin/install.sh: %w", name, dir, err)
	}
	return p, nil
}

// ErrPrereq marks errors that mean "cannot run here" rather than "broken".
var ErrPrereq = errors.New("e2e prerequisite missing")

// Prereq returns nil when the suites can run: either an existing cluster was
// asked for, or the control-plane binaries are present.
func Prereq() error {
	if UseExistingCluster() {
		if os.Getenv("KUBECONFIG") == "" {
			return fmt.Errorf("%w: %s=true but KUBECONFIG is empty", ErrPrereq, EnvExisting)
		}
		return nil
	}
	if _, err := AssetsDir(); err != nil {
		return fmt.Errorf("%w: %v", ErrPrereq, err)
	}
	return nil
}

// TB is the part of testing.TB the harness needs.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// NeedPrereq skips the test when err (from Prereq) is non-nil — or fails it
// when E2E_REQUIRED is set, so `make test` cannot go green by skipping.
func NeedPrereq(t TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if Required() {
		t.Fatalf("%v (%s is set, so this is a failure, not a skip)", err, EnvRequired)
	}
	t.Skipf("skipping end-to-end test: %v", err)
}
