package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunDispatch(t *testing.T) {
	tests := map[string]struct {
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		"no command is a usage error":         {nil, 2, "", "usage: dualstack-webhook"},
		"help lists the commands":             {[]string{"help"}, 0, "serve", ""},
		"an unknown command is a usage error": {[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		"serve --help is not a failure":       {[]string{"serve", "--help"}, 0, "", "--service-cidrs"},
		"serve with a bad flag fails":         {[]string{"serve", "--dev", "--service-cidrs", "nope"}, 1, "", "dualstack-webhook serve: --service-cidrs"},
		"render-policy prints the policy":     {[]string{"render-policy", "--default-ip-family-policy", "PreferDualStack"}, 0, "kind: MutatingAdmissionPolicyBinding", ""},
		"render-policy with a bad default":    {[]string{"render-policy", "--default-ip-family-policy", "Dual"}, 1, "", `default ipFamilyPolicy "Dual"`},
		"render-policy takes no arguments":    {[]string{"render-policy", "x"}, 1, "", "unexpected arguments"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.wantCode, errb.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.wantOut)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.wantErr)
			}
		})
	}
}

func TestKubectlPlugin(t *testing.T) {
	for argv0, want := range map[string]bool{
		"kubectl-dualstack":                    true,
		"/home/me/.krew/bin/kubectl-dualstack": true,
		`C:\krew\bin\kubectl-dualstack.exe`:    false, // a Windows path is not split on Linux
		"kubectl-dualstack.exe":                true,
		"dualstack-webhook":                    false,
		"/usr/local/bin/dualstack-webhook":     false,
		"kubectl-dualstack-old":                false,
	} {
		if got := isKubectlPlugin(argv0); got != want {
			t.Errorf("isKubectlPlugin(%q) = %v, want %v", argv0, got, want)
		}
	}

	tests := map[string]struct {
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		"no command is a usage error":   {nil, 2, "", "usage: kubectl dualstack"},
		"help lists the ops commands":   {[]string{"help"}, 0, "status", ""},
		"serve is not a plugin command": {[]string{"serve", "--dev"}, 2, "", `kubectl dualstack: unknown command "serve"`},
		"status takes kubectl's flags": {
			[]string{"status", "--kubeconfig", "/nonexistent/kubeconfig", "--context", "other", "-n", "ops", "-o", "json"},
			1, "", "loading kubeconfig",
		},
		"convert runs": {[]string{"convert", "--help"}, 0, "--service-cidrs", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runPlugin(context.Background(), tc.args, &out, &errb)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.wantCode, errb.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.wantOut)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.wantErr)
			}
			if strings.Contains(out.String(), "  serve ") {
				t.Errorf("plugin output offers serve:\n%s", out.String())
			}
		})
	}
}
