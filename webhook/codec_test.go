package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	corev1 "k8s.io/api/core/v1"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// fastPathSeeds are reviews on both sides of every condition of decodeFast.
func fastPathSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	files, _ := filepath.Glob("../examples/*.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	plain := svc("a", selector)
	for _, r := range []reviewSpec{
		{object: plain},
		{apiVersion: apiVersionV1beta1, object: svc("a", selector+`,"ipFamilyPolicy":"RequireDualStack"`)},
		{object: svc("a", selector+`,"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv6"]`)},
		{object: svc("a", selector+`,"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4","IPv6"]`)}, // denied
		{object: svc("a", `"type":"ExternalName","externalName":"x"`)},
		{object: svc("a", `"type":"ClusterIP","clusterIP":"None"`)},
		{object: svcWithLabels("a", `{"dualstack-webhook.io/skip":"true"}`, selector)},
		{op: "UPDATE", object: svc("a", selector+`,"clusterIP":"10.96.0.1","ipFamilyPolicy":"PreferDualStack"`),
			oldObject: svc("a", selector+`,"clusterIP":"10.96.0.1","clusterIPs":["10.96.0.1"],"ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack"`)},
		{op: "UPDATE", object: svc("a", selector+`,"ipFamily":"IPv4"`), oldObject: svc("a", selector+`,"clusterIP":"10.96.0.1"`)},
		{op: "DELETE", object: plain},
		{op: "PATCH", object: plain},
		{uid: "", object: plain},
		{namespace: "default", name: "kubernetes", object: plain},
		{kind: `{"group":"","version":"v1","kind":"Pod"}`, object: plain},
		{resource: `{"group":"","version":"v1","resource":"pods"}`, object: plain},
		{object: `{"apiVersion":"v1","kind":"Pod","spec":{"ports":[{"port":80}]}}`},
		{object: `{"apiVersion":"v2","kind":"Service","spec":{"ports":[{"port":80}]}}`},
		{object: `{"spec":null}`},
		{object: `{}`},
		{object: `{"metadata":{"name":"a"},"spec":{"type":"ClusterIP"}}`},
		{object: `{"spec":{"ports":"x"}}`},
		{object: `"a string"`},
		{object: svc("a", selector+`,"ipFamily":"IPv6"`)},
		{object: svc("a", `"type":"ClusterIP","selector":{"app":"\u003cx\u003e"},"ports":[{"port":80}]`)},
		{object: svcWithLabels("a", `{"object":"x"}`, selector)},
		{object: svc("a", `"Ports":[{"port":80}],"selector":{"app":"x"}`)},
	} {
		seeds = append(seeds, r.JSON())
	}
	base := string(reviewSpec{object: plain}.JSON())
	for _, s := range []string{
		// A second "object" member: the general path keeps the last one.
		base[:len(base)-2] + `,"object":{"spec":{"ipFamilyPolicy":"RequireDualStack"}}}}`,
		base[:len(base)-2] + `,"\u006fbject":{"spec":{"ipFamilyPolicy":"RequireDualStack"}}}}`,
		base[:len(base)-2] + `,"object":null}}`,
		base[:len(base)-1] + `,"request":{"object":{"spec":{"type":"NodePort"}}}}`,
		base[:len(base)-1] + `,"request":null}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":{"selector":{}}}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5,"kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":{"selector":{}}}}}`,
		`{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":{"selector":{}}}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"Review","request":{"uid":"u","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":{"selector":{}}}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":{"selector":{}}}}} x`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// reviewAnswer is everything a review produces that reaches the apiserver
// or the log.
type reviewAnswer struct {
	Out                              string
	Outcome, Reason, Namespace, Name string
	Err                              string
}

// answerOf decodes body with decode and reviews it on every endpoint.
func answerOf(t *testing.T, h *Handler, body []byte, decode func([]byte) (*reviewIn, error)) []reviewAnswer {
	t.Helper()
	if _, err := decode(body); err != nil {
		return []reviewAnswer{{Err: err.Error()}}
	}
	var out []reviewAnswer
	for _, ep := range []endpoint{mutateEndpoint, defaultEndpoint, validateEndpoint} {
		// Every endpoint reviews its own decoded copy: the engine owns
		// the Service it is handed.
		in, _ := decode(body)
		res := h.review(context.Background(), ep, in.Request)
		b, err := encodeReview(in.APIVersion, res.resp)
		if err != nil {
			t.Fatal(err)
		}
		a := reviewAnswer{Out: string(b), Outcome: res.outcome, Reason: res.reason, Namespace: res.namespace, Name: res.name}
		if res.err != nil {
			a.Err = res.err.Error()
		}
		out = append(out, a)
	}
	return out
}

// FuzzFastDecode checks that the one-pass decode of a Service review gives
// exactly the answers of the general path (raw object, decoded by the
// policy engine) whenever it is taken.
func FuzzFastDecode(f *testing.F) {
	for _, s := range fastPathSeeds(f) {
		f.Add(s)
	}
	h, err := NewHandler(Options{Evaluate: evaluateReal, Families: dualV4V6})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if decodeFast(body) == nil {
			return
		}
		fast := answerOf(t, h, body, decodeReview)
		general := answerOf(t, h, body, decodeGeneral)
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("fast and general decode answer differently for %s:\nfast:    %+v\ngeneral: %+v", body, fast, general)
		}
	})
}

// TestFastDecodeTaken keeps the fast path in use for what the apiserver
// sends (a benchmark would only show it slower), and out of use for what
// it cannot answer alike.
func TestFastDecodeTaken(t *testing.T) {
	for _, c := range []struct {
		name string
		body []byte
		fast bool
	}{
		{"plain example", mustRead(t, "../examples/admissionreview-plain.json"), true},
		{"invalid example", mustRead(t, "../examples/admissionreview-invalid.json"), true},
		{"update", reviewSpec{op: "UPDATE", object: svc("a", selector), oldObject: svc("a", selector)}.JSON(), true},
		{"legacy example", mustRead(t, "../examples/admissionreview-legacy.json"), false},
		{"ConfigMap", poolsReview("u", "UPDATE", "pools", tinyPools).JSON(), false},
		{"no spec", reviewSpec{object: `{"metadata":{"name":"a"}}`}.JSON(), false},
		{"null object", reviewSpec{}.JSON(), false},
		{"escaped key", reviewSpec{object: `{"spec":{"\u0070orts":[{"port":80}]}}`}.JSON(), false},
		{"type error", reviewSpec{object: `{"spec":{"ports":"x"}}`}.JSON(), false},
	} {
		in := decodeFast(c.body)
		if got := in != nil; got != c.fast {
			t.Errorf("%s: fast path %v, want %v", c.name, got, c.fast)
		}
		if in != nil && (in.Request.svc == nil || in.Request.Object != nil) {
			t.Errorf("%s: fast path without a decoded Service or with a raw one", c.name)
		}
	}
}

func TestFastDecodeSeeds(t *testing.T) {
	h, err := NewHandler(Options{Evaluate: evaluateReal, Families: dualV4V6})
	if err != nil {
		t.Fatal(err)
	}
	fastSeen := 0
	for _, body := range fastPathSeeds(t) {
		if decodeFast(body) == nil {
			continue
		}
		fastSeen++
		if fast, general := answerOf(t, h, body, decodeReview), answerOf(t, h, body, decodeGeneral); !reflect.DeepEqual(fast, general) {
			t.Errorf("fast and general decode answer differently for %s:\nfast:    %+v\ngeneral: %+v", body, fast, general)
		}
	}
	if fastSeen < 10 {
		t.Errorf("only %d seeds take the fast path", fastSeen)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeSeeds are answers with every member and the string escapes of
// encoding/json.
func encodeSeeds() []*admissionv1.AdmissionResponse {
	pt := admissionv1.PatchTypeJSONPatch
	odd := "a\"b\\c<d>e&f\x00\x01\b\f\n\r\t\x1f\x7f é \u2028 \u2029 \xff\xfe 😀 end"
	return []*admissionv1.AdmissionResponse{
		{UID: "u", Allowed: true},
		{UID: "", Allowed: false},
		{UID: "u", Allowed: true, AuditAnnotations: map[string]string{"decision": "skipped: label x"}},
		{UID: "u", Allowed: true, Patch: []byte(`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"PreferDualStack"}]`), PatchType: &pt,
			AuditAnnotations: map[string]string{"decision": "patched: ipFamilyPolicy"}, Warnings: []string{"w1", "w2"}},
		{UID: "u", Allowed: true, Patch: []byte{0, 1, 2, 0xff}},
		{UID: "u", Allowed: true, AuditAnnotations: map[string]string{"b": "2", "a": "1", "c": odd, odd: "x"}},
		{UID: types.UID("u" + odd), Allowed: true, Warnings: []string{odd, ""}},
		{UID: "u", Allowed: true, Warnings: []string{}, AuditAnnotations: map[string]string{}, Patch: []byte{}},
		{UID: "u", Allowed: false, Result: &metav1.Status{Code: 422, Message: odd}},
		nil,
	}
}

// TestEncodeReviewMatchesJSON: the hand-written encoder writes what
// encoding/json writes, byte for byte.
func TestEncodeReviewMatchesJSON(t *testing.T) {
	for _, av := range []string{apiVersionV1, apiVersionV1beta1, ""} {
		for i, resp := range encodeSeeds() {
			checkEncode(t, i, av, resp)
		}
	}
}

func checkEncode(t *testing.T, i int, av string, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	got, err := encodeReview(av, resp)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: av, Kind: "AdmissionReview"}, Response: resp})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%d (%q): encodeReview\n%s\nencoding/json\n%s", i, av, got, want)
	}
}

// FuzzEncodeReview compares the encoder with encoding/json on arbitrary
// strings in every member.
func FuzzEncodeReview(f *testing.F) {
	f.Add("u", "w", "k", "v", []byte("p"), true)
	f.Add("a\"<>&\u2028\xff", "\x00\n", "é", "😀", []byte{}, false)
	f.Fuzz(func(t *testing.T, uid, warning, key, value string, patch []byte, allowed bool) {
		pt := admissionv1.PatchType(value)
		checkEncode(t, 0, apiVersionV1, &admissionv1.AdmissionResponse{
			UID: types.UID(uid), Allowed: allowed, Patch: patch, PatchType: &pt,
			AuditAnnotations: map[string]string{key: value, key + "2": warning}, Warnings: []string{warning, uid}})
	})
}

// TestBuildPatchBytes pins the hand-written JSONPatch to what marshalling
// the list of {op, path, value} objects with encoding/json gave, for every
// op the builder emits (add and replace of each field, remove, add /spec)
// and values that need escaping.
func TestBuildPatchBytes(t *testing.T) {
	odd := "a\"<&>\u2028\xff"
	for i, c := range []struct {
		raw        string
		d          policy.Decision
		pinned     []string
		want, keys string
	}{
		{`{"spec":null}`, policy.Decision{Write: policy.FieldIPFamilyPolicy | policy.FieldIPFamilies, Policy: "PreferDualStack",
			Families: []corev1.IPFamily{"IPv4", "IPv6"}}, []string{"10.96.0.10", "fd00::10"},
			`[{"op":"add","path":"/spec","value":{}},{"op":"add","path":"/spec/ipFamilyPolicy","value":"PreferDualStack"},` +
				`{"op":"add","path":"/spec/ipFamilies","value":["IPv4","IPv6"]},{"op":"add","path":"/spec/clusterIP","value":"10.96.0.10"},` +
				`{"op":"add","path":"/spec/clusterIPs","value":["10.96.0.10","fd00::10"]}]`,
			"ipFamilyPolicy,ipFamilies,clusterIP,clusterIPs"},
		{`{"spec":{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv6"],"ipFamily":"IPv6","clusterIP":"x","clusterIPs":["x"]}}`,
			policy.Decision{Write: policy.FieldIPFamilyPolicy | policy.FieldIPFamilies | policy.FieldLegacyIPFamily, Policy: corev1.IPFamilyPolicy(odd),
				Families: []corev1.IPFamily{corev1.IPFamily(odd)}}, []string{odd, "y"},
			`[{"op":"replace","path":"/spec/ipFamilyPolicy","value":"a\"\u003c\u0026\u003e\u2028\ufffd"},` +
				`{"op":"replace","path":"/spec/ipFamilies","value":["a\"\u003c\u0026\u003e\u2028\ufffd"]},{"op":"remove","path":"/spec/ipFamily"},` +
				`{"op":"replace","path":"/spec/clusterIP","value":"a\"\u003c\u0026\u003e\u2028\ufffd"},` +
				`{"op":"replace","path":"/spec/clusterIPs","value":["a\"\u003c\u0026\u003e\u2028\ufffd","y"]}]`,
			"ipFamilyPolicy,ipFamilies,-ipFamily,clusterIP,clusterIPs"},
		{`{"spec":{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv6"]}}`, policy.Decision{Write: policy.FieldIPFamilyPolicy | policy.FieldIPFamilies,
			Policy: "SingleStack", Families: []corev1.IPFamily{"IPv6"}}, nil, "", ""},
	} {
		patch, fields, err := buildPatch([]byte(c.raw), &c.d, c.pinned)
		if err != nil {
			t.Fatal(err)
		}
		if string(patch) != c.want || strings.Join(fields, ",") != c.keys {
			t.Errorf("%d: patch\n%s\nwant\n%s\nfields %v", i, patch, c.want, fields)
		}
		if c.want == "" && (patch != nil || fields != nil) {
			t.Errorf("%d: want nil patch and fields, got %q %v", i, patch, fields)
		}
	}
}
