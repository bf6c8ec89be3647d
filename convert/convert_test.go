package convert

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

// The four cluster shapes every policy table covers (house style):
// single-stack IPv4 and IPv6, dual-stack in both orders.
var clusters = map[string]string{
	"v4":   "10.96.0.0/16",
	"v6":   "fd00:10:96::/108",
	"v4v6": "10.96.0.0/16,fd00:10:96::/108",
	"v6v4": "fd00:10:96::/108,10.96.0.0/16",
}

func svcYAML(spec string) string {
	return "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n" + spec
}

// TestServiceCIDRs runs Services through each cluster shape (and the
// translation-only mode, cluster ""): the written result never depends on
// the cluster, only whether the Service is accepted does.
func TestServiceCIDRs(t *testing.T) {
	const (
		v4Out = "  ipFamilies:\n  - IPv4\n  ipFamilyPolicy: SingleStack\n  ports:\n  - port: 80\n"
		v6Out = "  ipFamilies:\n  - IPv6\n  ipFamilyPolicy: SingleStack\n  ports:\n  - port: 80\n"
	)
	tests := map[string]struct {
		spec string
		// want is the rewritten spec ("" = unchanged) when accepted;
		// errs maps cluster → the expected error line suffix.
		want string
		errs map[string]string
	}{
		"ipFamily IPv4 is accepted wherever IPv4 is configured": {
			spec: "  ipFamily: IPv4\n  ports:\n  - port: 80\n",
			want: v4Out,
			errs: map[string]string{"v6": `spec.ipFamily: Invalid value: "IPv4": only the following families are allowed: IPv6`},
		},
		"ipFamily IPv6 is accepted wherever IPv6 is configured": {
			spec: "  ipFamily: IPv6\n  ports:\n  - port: 80\n",
			want: v6Out,
			errs: map[string]string{"v4": `spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4`},
		},
		"an unknown family lists the cluster's families in cluster order": {
			spec: "  ipFamily: IPv7\n",
			errs: map[string]string{
				"":     `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4, IPv6`,
				"v4":   `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4`,
				"v6":   `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv6`,
				"v4v6": `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv4, IPv6`,
				"v6v4": `spec.ipFamily: Invalid value: "IPv7": only the following families are allowed: IPv6, IPv4`,
			},
		},
		"ipFamily contradicting clusterIP is rejected on every cluster": {
			spec: "  ipFamily: IPv6\n  clusterIP: 10.96.0.10\n",
			errs: map[string]string{
				"":     `spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP`,
				"v4":   `spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4`,
				"v6":   `spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP`,
				"v4v6": `spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP`,
				"v6v4": `spec.ipFamily: Invalid value: "IPv6": does not match IPv4 cluster IP`,
			},
		},
		"ipFamily contradicting ipFamilies is rejected": {
			spec: "  ipFamily: IPv4\n  ipFamilies: [IPv6]\n",
			errs: map[string]string{
				"":     `spec.ipFamily: Invalid value: "IPv4": conflicts with spec.ipFamilies[0] ("IPv6")`,
				"v4":   `spec.ipFamily: Invalid value: "IPv4": conflicts with spec.ipFamilies[0] ("IPv6")`,
				"v6":   `spec.ipFamily: Invalid value: "IPv4": only the following families are allowed: IPv6`,
				"v4v6": `spec.ipFamily: Invalid value: "IPv4": conflicts with spec.ipFamilies[0] ("IPv6")`,
				"v6v4": `spec.ipFamily: Invalid value: "IPv4": conflicts with spec.ipFamilies[0] ("IPv6")`,
			},
		},
		"a legacy PreferDualStack Service keeps its policy and gets only its first family": {
			spec: "  ipFamilyPolicy: PreferDualStack\n  ipFamily: IPv6\n",
			want: "  ipFamilyPolicy: PreferDualStack\n  ipFamilies:\n  - IPv6\n",
			errs: map[string]string{"v4": `spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4`},
		},
		"a modern RequireDualStack Service is only checked when the cluster is known": {
			spec: "  ipFamilyPolicy: RequireDualStack\n  ports:\n  - port: 80\n",
			errs: map[string]string{
				"v4": `spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`,
				"v6": `spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`,
			},
		},
		"a modern Service asking for a missing family is rejected by the known cluster": {
			spec: "  ipFamilies: [IPv6]\n  ports:\n  - port: 80\n",
			errs: map[string]string{"v4": `spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster`},
		},
		"the skip label does not stop the offline translation": {
			spec: "  ipFamily: IPv4\n  ports:\n  - port: 80\n",
			want: v4Out,
			errs: map[string]string{"v6": `only the following families are allowed: IPv6`},
		},
	}
	for name, tc := range tests {
		for _, cluster := range []string{"", "v4", "v6", "v4v6", "v6v4"} {
			t.Run(name+"/cluster="+cluster, func(t *testing.T) {
				in := svcYAML(tc.spec)
				if strings.HasPrefix(name, "the skip label") {
					in = strings.Replace(in, "  name: s\n", "  name: s\n  labels:\n    dualstack-webhook.io/skip: \"true\"\n", 1)
				}
				args := []string{"-f", "-"}
				if cluster != "" {
					args = append(args, "--service-cidrs", clusters[cluster])
				}
				var stdout, stderr bytes.Buffer
				code := Main(args, strings.NewReader(in), &stdout, &stderr)
				if wantErr, bad := tc.errs[cluster]; bad {
					if code != ExitInvalid {
						t.Fatalf("exit %d, want %d; stdout:\n%s", code, ExitInvalid, stdout.String())
					}
					if !strings.Contains(stderr.String(), "<stdin>:1: ") || !strings.Contains(stderr.String(), wantErr) {
						t.Errorf("stderr %q lacks %q", stderr.String(), wantErr)
					}
					if stdout.Len() != 0 {
						t.Errorf("stdout not empty on error: %q", stdout.String())
					}
					return
				}
				if code != ExitOK {
					t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
				}
				want := in
				if tc.want != "" {
					want = strings.Replace(in, tc.spec, tc.want, 1)
				}
				if diff := cmp.Diff(want, stdout.String()); diff != "" {
					t.Errorf("output (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestUntouchedDocumentsAreByteIdentical: in a stream with comments, odd
// quoting and other kinds, every section but the rewritten Service comes
// out byte for byte, and in the Service only the ipFamily line changes.
func TestUntouchedDocumentsAreByteIdentical(t *testing.T) {
	in, err := os.ReadFile("testdata/in/mixed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := (&Converter{}).Convert("mixed.yaml", in)
	if res.Failed() || res.Rewritten != 1 {
		t.Fatalf("rewritten %d, diagnostics %v", res.Rewritten, res.Diagnostics)
	}
	inSecs, outSecs := splitYAML(in), splitYAML(res.Output)
	if len(inSecs) != len(outSecs) {
		t.Fatalf("%d sections in, %d out", len(inSecs), len(outSecs))
	}
	changed := 0
	for i := range inSecs {
		a, b := string(inSecs[i].text), string(outSecs[i].text)
		if a == b {
			continue
		}
		changed++
		inLines, outLines := strings.Split(a, "\n"), strings.Split(b, "\n")
		// One line became three; everything before and after is equal.
		if len(outLines) != len(inLines)+2 {
			t.Fatalf("section %d: %d lines in, %d out", i, len(inLines), len(outLines))
		}
		j := 0
		for j < len(inLines) && inLines[j] == outLines[j] {
			j++
		}
		if got := strings.TrimSpace(inLines[j]); got != `ipFamily: "IPv6"   # legacy alpha field` {
			t.Errorf("first differing input line %q is not the legacy field", got)
		}
		if diff := cmp.Diff(inLines[j+1:], outLines[j+3:]); diff != "" {
			t.Errorf("lines after the edit differ:\n%s", diff)
		}
	}
	if changed != 1 {
		t.Errorf("%d sections changed, want 1", changed)
	}
}

// TestSequenceIndentFollowsTheDocument: the new ipFamilies list uses the
// indentation the Service's other lists use.
func TestSequenceIndentFollowsTheDocument(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"kubectl style, dash under the key": {
			in:   svcYAML("  ipFamily: IPv4\n  ports:\n  - port: 80\n"),
			want: svcYAML("  ipFamilies:\n  - IPv4\n  ipFamilyPolicy: SingleStack\n  ports:\n  - port: 80\n"),
		},
		"docs style, dash indented by two": {
			in:   svcYAML("  ipFamily: IPv4\n  ports:\n    - port: 80\n"),
			want: svcYAML("  ipFamilies:\n    - IPv4\n  ipFamilyPolicy: SingleStack\n  ports:\n    - port: 80\n"),
		},
		"four-space indentation": {
			in:   "apiVersion: v1\nkind: Service\nmetadata:\n    name: s\nspec:\n    ipFamily: IPv6\n    ports:\n        -   port: 80\n",
			want: "apiVersion: v1\nkind: Service\nmetadata:\n    name: s\nspec:\n    ipFamilies:\n        - IPv6\n    ipFamilyPolicy: SingleStack\n    ports:\n        -   port: 80\n",
		},
		"no list anywhere: kubectl style": {
			in:   svcYAML("  ipFamily: IPv6\n"),
			want: svcYAML("  ipFamilies:\n  - IPv6\n  ipFamilyPolicy: SingleStack\n"),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := (&Converter{}).Convert("x", []byte(tc.in))
			if res.Failed() {
				t.Fatal(res.Diagnostics)
			}
			if diff := cmp.Diff(tc.want, string(res.Output)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestEveryShapeEndsWithoutLegacyField: whichever edit path is taken
// (line edit or tree edit), the output has no spec.ipFamily left, carries
// the translation, and converting it again changes nothing.
func TestEveryShapeEndsWithoutLegacyField(t *testing.T) {
	tests := map[string]string{
		"plain":                   svcYAML("  ipFamily: IPv4\n"),
		"double-quoted":           svcYAML("  ipFamily: \"IPv4\"\n"),
		"single-quoted":           svcYAML("  ipFamily: 'IPv4'\n"),
		"quoted key":              svcYAML("  \"ipFamily\": IPv4\n"),
		"value on the next line":  svcYAML("  ipFamily:\n    IPv4\n"),
		"tagged value":            svcYAML("  ipFamily: !!str IPv4\n"),
		"anchored value":          svcYAML("  ipFamily: &fam IPv4\n"),
		"flow spec":               "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ipFamily: IPv4}\n",
		"policy null":             svcYAML("  ipFamilyPolicy: null\n  ipFamily: IPv4\n"),
		"families empty":          svcYAML("  ipFamilies: []\n  ipFamily: IPv4\n"),
		"comment above and after": svcYAML("  # above\n  ipFamily: IPv4 # after\n  # below\n  type: ClusterIP\n"),
		"JSON":                    `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ipFamily":"IPv4"}}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			c := &Converter{Families: []corev1.IPFamily{corev1.IPv4Protocol}}
			res := c.Convert("x", []byte(in))
			if res.Failed() || res.Rewritten != 1 {
				t.Fatalf("rewritten %d: %v", res.Rewritten, res.Diagnostics)
			}
			out := string(res.Output)
			if strings.Contains(out, "ipFamily:") || strings.Contains(out, `"ipFamily"`) {
				t.Errorf("legacy field left:\n%s", out)
			}
			for _, want := range []string{"ipFamilyPolicy: SingleStack", "IPv4"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(name, "comment") && (!strings.Contains(out, "# above") || !strings.Contains(out, "# after") || !strings.Contains(out, "# below")) {
				t.Errorf("comments lost:\n%s", out)
			}
			again := c.Convert("x", res.Output)
			if again.Failed() || again.Rewritten != 0 || !bytes.Equal(again.Output, res.Output) {
				t.Errorf("second pass changed something (%d rewrites, %v):\n%s", again.Rewritten, again.Diagnostics, again.Output)
			}
		})
	}
}

func TestParseFamilies(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    []corev1.IPFamily
		wantErr string
	}{
		"IPv4":                  {in: "10.96.0.0/16", want: []corev1.IPFamily{"IPv4"}},
		"IPv6":                  {in: "fd00:10:96::/108", want: []corev1.IPFamily{"IPv6"}},
		"dual, IPv4 first":      {in: "10.96.0.0/16, fd00:10:96::/108", want: []corev1.IPFamily{"IPv4", "IPv6"}},
		"dual, IPv6 first":      {in: "fd00:10:96::/108,10.96.0.0/16", want: []corev1.IPFamily{"IPv6", "IPv4"}},
		"same family twice":     {in: "10.96.0.0/16,10.97.0.0/16", wantErr: "two CIDRs of the same family"},
		"three":                 {in: "10.96.0.0/16,fd00::/108,10.1.0.0/16", wantErr: "at most two"},
		"host bits":             {in: "10.96.0.1/16", wantErr: "did you mean 10.96.0.0/16"},
		"not a CIDR":            {in: "10.96.0.0", wantErr: "is not a CIDR"},
		"IPv4-mapped":           {in: "::ffff:10.96.0.0/112", wantErr: "IPv4-mapped"},
		"empty element (comma)": {in: "10.96.0.0/16,", wantErr: "is not a CIDR"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseFamilies(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// TestExitCodes covers the CLI contract beyond the golden cases.
func TestExitCodes(t *testing.T) {
	tests := map[string]struct {
		args       []string
		stdin      string
		wantExit   int
		wantStderr string
		wantStdout string
	}{
		"help goes to stdout":        {args: []string{"--help"}, wantExit: ExitOK, wantStdout: "Usage:\n  dualstack-webhook convert"},
		"unknown flag":               {args: []string{"--frobnicate"}, wantExit: ExitUsage, wantStderr: "unknown flag: --frobnicate"},
		"positional argument":        {args: []string{"svc.yaml"}, wantExit: ExitUsage, wantStderr: "files go after -f"},
		"missing file":               {args: []string{"-f", "testdata/no-such-file.yaml"}, wantExit: ExitUsage, wantStderr: "no-such-file.yaml"},
		"stdin twice":                {args: []string{"-f", "-", "-f", "-"}, wantExit: ExitUsage, wantStderr: `"-f -" given twice`},
		"bad --service-cidrs":        {args: []string{"--service-cidrs", "10.0.0.0/33"}, wantExit: ExitUsage, wantStderr: "--service-cidrs:"},
		"empty stdin is no error":    {wantExit: ExitOK},
		"unparsable YAML":            {stdin: "a: [\n", wantExit: ExitInvalid, wantStderr: "<stdin>:1: cannot parse YAML: yaml: line 1:"},
		"not a Service: untouched":   {stdin: "kind: Foo\nspec:\n  ipFamily: IPv4\n", wantExit: ExitOK, wantStdout: "kind: Foo\nspec:\n  ipFamily: IPv4\n"},
		"undecodable legacy Service": {stdin: svcYAML("  ipFamily: IPv4\n  ports: 80\n"), wantExit: ExitInvalid, wantStderr: "<stdin>:1: cannot decode Service:"},
		"duplicate legacy key": {stdin: svcYAML("  ipFamily: IPv4\n  ipFamily: IPv6\n"), wantExit: ExitInvalid,
			wantStderr: "<stdin>:1: spec.ipFamily: Duplicate value: the key appears more than once"},
		"duplicate ipFamilies in a List item": {stdin: "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(svcYAML("  ipFamilies: [IPv4]\n  ipFamilies: [IPv6]\n"), "\n", "\n  "),
			args: []string{"--service-cidrs", "10.96.0.0/16"}, wantExit: ExitInvalid,
			wantStderr: "<stdin>:1: items[0].spec.ipFamilies: Duplicate value"},
		"ipFamily null is only dropped": {stdin: svcYAML("  ipFamily:\n  type: ClusterIP\n"), wantExit: ExitOK,
			wantStdout: svcYAML("  type: ClusterIP\n"), wantStderr: "<stdin>:1: warning: spec.ipFamily: null was removed in Kubernetes 1.20; dropped"},
		"ipFamily ~ on a known cluster": {stdin: svcYAML("  ipFamily: ~\n"), args: []string{"--service-cidrs", "fd00::/108"}, wantExit: ExitOK,
			wantStdout: svcYAML("")},
		"error count in summary": {stdin: svcYAML("  ipFamily: IPv7\n") + "---\n" + svcYAML("  ipFamily: IPv8\n"), wantExit: ExitInvalid,
			wantStderr: "<stdin>:2: spec.ipFamily: Invalid value: \"IPv8\": only the following families are allowed: IPv4, IPv6\nconvert: 2 error(s); nothing written\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.wantExit {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.wantExit, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.wantStderr)
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.wantStdout)
			}
			if tc.wantExit != ExitOK && stdout.Len() > 0 {
				t.Errorf("stdout not empty on failure: %q", stdout.String())
			}
		})
	}
}

// TestDropOnly: --drop-only removes the field and writes nothing else; the
// rest of the Service is still checked against a known cluster.
func TestDropOnly(t *testing.T) {
	tests := map[string]struct {
		args       []string
		in         string
		wantExit   int
		wantOut    string
		wantStderr string
	}{
		"the field goes, nothing is written": {
			in:         svcYAML("  ipFamily: IPv4\n  ports:\n  - port: 80\n"),
			wantOut:    svcYAML("  ports:\n  - port: 80\n"),
			wantStderr: `<stdin>:1: warning: spec.ipFamily: "IPv4" was removed in Kubernetes 1.20; dropped, ipFamilyPolicy and ipFamilies left as they are (--drop-only)`,
		},
		"a comment on the line stays on its own line": {
			in:      svcYAML("  ipFamily: IPv6 # chosen in 2019\n  type: ClusterIP\n"),
			wantOut: svcYAML("  # chosen in 2019\n  type: ClusterIP\n"),
		},
		"the legacy value is not checked: the Service exists already": {
			args:    []string{"--service-cidrs", "fd00:10:96::/108"},
			in:      svcYAML("  ipFamily: IPv4\n"),
			wantOut: svcYAML(""),
		},
		"the rest of the Service is checked against the cluster": {
			args:       []string{"--service-cidrs", "10.96.0.0/16"},
			in:         svcYAML("  ipFamilyPolicy: RequireDualStack\n  ipFamily: IPv4\n"),
			wantExit:   ExitInvalid,
			wantStderr: `<stdin>:1: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`,
		},
		// spec: null and spec: {} decode to the same empty ServiceSpec.
		"inside a List, the only key of spec": {
			in:         "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  spec:\n    ipFamily: IPv6\n",
			wantOut:    "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  spec:\n",
			wantStderr: `<stdin>:1: warning: items[0]: spec.ipFamily: "IPv6" was removed`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(append([]string{"--drop-only"}, tc.args...), strings.NewReader(tc.in), &stdout, &stderr)
			if code != tc.wantExit {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.wantExit, stderr.String())
			}
			if diff := cmp.Diff(tc.wantOut, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

// TestDropOnlyFromFunctionConfig: kustomize users set dropOnly in the
// transformer's ConfigMap.
func TestDropOnlyFromFunctionConfig(t *testing.T) {
	rl := `apiVersion: config.kubernetes.io/v1
kind: ResourceList
functionConfig:
  apiVersion: v1
  kind: ConfigMap
  data:
    dropOnly: "true"
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: s
  spec:
    ipFamily: IPv6
    ports:
    - port: 80
`
	var stdout, stderr bytes.Buffer
	if code := Main(nil, strings.NewReader(rl), &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	items, _, _ := strings.Cut(out, "results:")
	if strings.Contains(items, "ipFamily") || !strings.Contains(items, "kind: ResourceList") || !strings.Contains(items, "port: 80") ||
		!strings.Contains(out, "(--drop-only)") {
		t.Errorf("not a drop-only ResourceList:\n%s", out)
	}
}

// TestSplitYAML: sections concatenate back to the input, and cut where
// kubectl cuts.
func TestSplitYAML(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
	}{
		"no separator":                 {in: "a: 1\n", want: []string{"a: 1\n"}},
		"leading separator":            {in: "---\na: 1\n", want: []string{"---\na: 1\n"}},
		"separator with comment":       {in: "a: 1\n--- # x\nb: 2\n", want: []string{"a: 1\n", "--- # x\nb: 2\n"}},
		"CRLF separator":               {in: "a: 1\r\n---\r\nb: 2\r\n", want: []string{"a: 1\r\n", "---\r\nb: 2\r\n"}},
		"not a separator: ----":        {in: "a: 1\n----\n", want: []string{"a: 1\n----\n"}},
		"not a separator: indented":    {in: "a: |\n  ---\n", want: []string{"a: |\n  ---\n"}},
		"separator without newline":    {in: "a: 1\n---", want: []string{"a: 1\n", "---"}},
		"directive stays with its doc": {in: "%YAML 1.1\n---\na: 1\n", want: []string{"%YAML 1.1\n---\na: 1\n"}},
		"comment-only section":         {in: "# c\n---\na: 1\n", want: []string{"# c\n", "---\na: 1\n"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, s := range splitYAML([]byte(tc.in)) {
				got = append(got, string(s.text))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// TestTranslationClusterRaisesOnlyUniversalErrors checks the premise of
// translationFamilies against kube-apiserver's recorded answers
// (policy/testdata/create_grid.json, 560 creates on real apiservers): every
// Service a dual-stack cluster rejects is rejected by all four cluster
// shapes with the same messages in both dual-stack orders, so errors seen
// without --service-cidrs never depend on the guessed cluster.
func TestTranslationClusterRaisesOnlyUniversalErrors(t *testing.T) {
	raw, err := os.ReadFile("../policy/testdata/create_grid.json")
	if err != nil {
		t.Skipf("apiserver grid not available: %v", err)
	}
	var grid struct {
		Cells []struct {
			Cluster, Name string
			Error         *struct{ Message string }
		}
	}
	if err := json.Unmarshal(raw, &grid); err != nil {
		t.Fatal(err)
	}
	byShape := map[string]map[string]string{} // name → cluster → error ("" = accepted)
	for _, c := range grid.Cells {
		if byShape[c.Name] == nil {
			byShape[c.Name] = map[string]string{}
		}
		msg := ""
		if c.Error != nil {
			msg = "rejected: " + c.Error.Message
		}
		byShape[c.Name][c.Cluster] = msg
	}
	if len(byShape) < 100 {
		t.Fatalf("only %d shapes in the grid", len(byShape))
	}
	for name, res := range byShape {
		dual := res["v4v6"]
		if dual != res["v6v4"] {
			t.Errorf("%s: v4v6 %q but v6v4 %q", name, dual, res["v6v4"])
		}
		if dual == "" {
			continue
		}
		for _, cl := range []string{"v4", "v6"} {
			if res[cl] == "" {
				t.Errorf("%s: rejected on dual-stack (%s) but accepted on %s", name, dual, cl)
			}
		}
	}
}
