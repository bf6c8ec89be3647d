package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol

	single  = corev1.IPFamilyPolicySingleStack
	prefer  = corev1.IPFamilyPolicyPreferDualStack
	require = corev1.IPFamilyPolicyRequireDualStack
)

// The four cluster shapes of upstream's TestCreateInitIPFields.
var (
	clusterV4   = []corev1.IPFamily{v4}
	clusterV6   = []corev1.IPFamily{v6}
	clusterV4V6 = []corev1.IPFamily{v4, v6}
	clusterV6V4 = []corev1.IPFamily{v6, v4}

	shapes = map[string][]corev1.IPFamily{"v4": clusterV4, "v6": clusterV6, "v4v6": clusterV4V6, "v6v4": clusterV6V4}
)

// spec builds a Service as raw JSON from spec fields, so tests can also
// carry fields today's types do not know (spec.ipFamily).
type spec map[string]any

func svcJSON(t testing.TB, name string, s spec) []byte {
	t.Helper()
	if _, ok := s["ports"]; !ok {
		s["ports"] = []any{map[string]any{"port": 80}}
	}
	obj := map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": name, "namespace": "ns"},
		"spec":     s,
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want is the expected outcome: either the resolved fields or error texts
// (each "path: detail" substring must appear, in order).
type want struct {
	policy   corev1.IPFamilyPolicy
	families []corev1.IPFamily
	allocate []corev1.IPFamily
	release  []string
	errs     []string
	warn     string // substring of one warning
}

func fams(f ...corev1.IPFamily) []corev1.IPFamily { return f }

func check(t *testing.T, d *Decision, err error, w want) {
	t.Helper()
	if len(w.errs) > 0 {
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("want InvalidError %q, got decision %+v err %v", w.errs, d, err)
		}
		msg := inv.Error()
		pos := 0
		for _, e := range w.errs {
			i := strings.Index(msg[pos:], e)
			if i < 0 {
				t.Fatalf("error %q\n  does not contain (in order) %q", msg, e)
			}
			pos += i + len(e)
		}
		if len(inv.Errs) != len(w.errs) {
			t.Fatalf("error %q: got %d field errors, want %d", msg, len(inv.Errs), len(w.errs))
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if d.Policy != w.policy {
		t.Errorf("policy = %q, want %q", d.Policy, w.policy)
	}
	if !equalFams(d.Families, w.families) {
		t.Errorf("families = %v, want %v", d.Families, w.families)
	}
	if !equalFams(d.Allocate, w.allocate) {
		t.Errorf("allocate = %v, want %v", d.Allocate, w.allocate)
	}
	if strings.Join(d.Release, ",") != strings.Join(w.release, ",") {
		t.Errorf("release = %v, want %v", d.Release, w.release)
	}
	if w.warn != "" && !strings.Contains(strings.Join(d.Warnings, "\n"), w.warn) {
		t.Errorf("warnings %q do not contain %q", d.Warnings, w.warn)
	}
}

func equalFams(a, b []corev1.IPFamily) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }
