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
