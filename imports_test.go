package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// importRule is what one package may depend on (docs/architecture.md,
// "Packages and what they may import"). Project packages are named relative
// to the module; deps are transitive, so a rule cannot be dodged through a
// helper package.
type importRule struct {
	project []string // project packages allowed anywhere in its deps
	noDeps  []string // import-path prefixes forbidden anywhere in its deps
	noStd   []string // standard-library packages it must not import directly
}

const module = "github.com/dualstack-webhook/dualstack-webhook"

// The webhook's path (webhook → policy → alloc) never talks to the
// apiserver itself: only alloc/configmap (the store), reconcile (listers),
// ops, certs and internal/serve (the wiring) depend on client-go.
var importRules = map[string]importRule{
	"policy":                 {noDeps: []string{"k8s.io/client-go", "go.uber.org/zap", "github.com/prometheus"}, noStd: []string{"os", "io", "net", "net/http", "time"}},
	"alloc":                  {noDeps: []string{"k8s.io/client-go", "github.com/prometheus"}},
	"alloc/memory":           {project: []string{"alloc"}, noDeps: []string{"k8s.io/client-go"}},
	"alloc/storetest":        {project: []string{"alloc"}, noDeps: []string{"k8s.io/client-go"}},
	"alloc/configmap":        {project: []string{"alloc"}},
	"webhook":                {project: []string{"alloc", "policy"}, noDeps: []string{"k8s.io/client-go"}},
	"convert":                {project: []string{"alloc", "policy"}, noDeps: []string{"k8s.io/client-go"}},
	"reconcile":              {project: []string{"alloc"}},
	"ops":                    {project: []string{"alloc", "alloc/configmap"}},
	"certs":                  {},
	"charts":                 {}, // tests of the Helm chart only
	"policy/admissionpolicy": {project: []string{"policy"}, noDeps: []string{"k8s.io/client-go", "go.uber.org/zap", "github.com/prometheus"}, noStd: []string{"os", "io", "net", "net/http", "time"}},
	"internal/renderpolicy":  {project: []string{"policy", "policy/admissionpolicy"}, noDeps: []string{"k8s.io/client-go"}},
	"internal/serve":         {project: []string{"alloc", "alloc/configmap", "alloc/memory", "certs", "policy", "reconcile", "webhook"}},
	"":                       {project: []string{"convert", "internal/serve", "internal/renderpolicy", "policy/admissionpolicy", "ops", "alloc", "alloc/configmap", "alloc/memory", "certs", "policy", "reconcile", "webhook"}},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}|{{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		pkg := strings.TrimPrefix(strings.TrimPrefix(parts[0], module), "/")
		rule, ok := importRules[pkg]
		if !ok {
			t.Errorf("package %q has no import rule: add it to importRules and to docs/architecture.md", pkg)
			continue
		}
		seen[pkg] = true
		for _, dep := range strings.Fields(parts[1]) {
			if rel, ok := strings.CutPrefix(dep, module+"/"); ok {
				if !slices.Contains(rule.project, rel) {
					t.Errorf("%s depends on %s, which its rule does not allow", display(pkg), rel)
				}
				continue
			}
			for _, p := range rule.noDeps {
				if dep == p || strings.HasPrefix(dep, p+"/") {
					t.Errorf("%s depends on %s (forbidden: %s)", display(pkg), dep, p)
				}
			}
		}
		for _, imp := range strings.Fields(parts[2]) {
			if slices.Contains(rule.noStd, imp) {
				t.Errorf("%s imports %s: it must stay free of I/O and clocks", display(pkg), imp)
			}
		}
	}
	for pkg := range importRules {
		if !seen[pkg] {
			t.Errorf("import rule for %q matches no package: remove it", pkg)
		}
	}
}

func display(pkg string) string {
	if pkg == "" {
		return "main"
	}
	return pkg
}
