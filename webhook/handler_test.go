package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	jsonpatch "github.com/evanphx/json-patch/v5"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestAnswersInTheVersionAskedAndEchoesUID(t *testing.T) {
	e := newEnv(t, Options{})
	for _, v := range []string{apiVersionV1, apiVersionV1beta1} {
		for _, path := range []string{"/mutate", "/validate"} {
			t.Run(v+path, func(t *testing.T) {
				uid := "uid-" + strings.ReplaceAll(v+path, "/", "-")
				got, resp := e.review(path, reviewSpec{apiVersion: v, uid: uid, object: svc("web", selector)}.JSON())
				if got != v {
					t.Errorf("apiVersion = %q, want %q", got, v)
				}
				if string(resp.UID) != uid {
					t.Errorf("uid = %q, want %q", resp.UID, uid)
				}
				if !resp.Allowed {
					t.Errorf("denied: %+v", resp.Result)
				}
			})
		}
	}
}

func TestHTTPLevelRejections(t *testing.T) {
	e := newEnv(t, Options{})
	good := reviewSpec{object: svc("web", selector)}.JSON()
	tests := map[string]struct {
		method, path, contentType string
		body                      []byte
		wantCode                  int
		wantText                  string
	}{
		"a text/plain body is refused with 415": {
			http.MethodPost, "/mutate", "text/plain", good, 415, "unsupported content type"},
		"a missing content type is refused with 415": {
			http.MethodPost, "/validate", "", good, 415, "want application/json"},
		"application/json with a charset is accepted": {
			http.MethodPost, "/mutate", "application/json; charset=utf-8", good, 200, `"allowed":true`},
		"a body over 7 MiB is refused with 413": {
			http.MethodPost, "/mutate", "application/json", bytes.Repeat([]byte(" "), MaxBodyBytes+1), 413, "exceeds the limit"},
		"a body of exactly 7 MiB is read (then found malformed)": {
			http.MethodPost, "/mutate", "application/json", append(bytes.Repeat([]byte(" "), MaxBodyBytes-1), '{'), 400, "malformed AdmissionReview"},
		"malformed JSON is a 400 with a reason": {
			http.MethodPost, "/mutate", "application/json", []byte(`{"apiVersion":`), 400, "malformed AdmissionReview"},
		"an empty body is a 400": {
			http.MethodPost, "/mutate", "application/json", nil, 400, "empty request body"},
		"a review of another apiVersion is a 400": {
			http.MethodPost, "/mutate", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{}}`), 400, `unsupported apiVersion "admission.k8s.io/v2"`},
		"another kind of document is a 400": {
			http.MethodPost, "/mutate", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"Service"}`), 400, `unsupported kind "Service"`},
		"a review without request is a 400": {
			http.MethodPost, "/validate", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "has no request"},
		"GET on /mutate is 405": {
			http.MethodGet, "/mutate", "", nil, 405, "not allowed"},
		"an unknown path is 404": {
			http.MethodPost, "/mutate-pods", "application/json", good, 404, "not found"},
		"healthz answers ok": {
			http.MethodGet, "/healthz", "", nil, 200, "ok"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, bytes.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			code, body := e.do(req)
			if code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.wantCode, body)
			}
			if !strings.Contains(string(body), tc.wantText) {
				t.Errorf("body %q does not contain %q", body, tc.wantText)
			}
			if code != 200 && strings.Count(strings.TrimSuffix(string(body), "\n"), "\n") != 0 {
				t.Errorf("reason is not one line: %q", body)
			}
		})
	}
}

func TestOversizedChunkedBodyIs413(t *testing.T) {
	e := newEnv(t, Options{})
	// No Content-Length: the limit must hold while reading, not only on
	// the header.
	pr := strings.NewReader(strings.Repeat(" ", MaxBodyBytes+10))
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/mutate", struct{ *strings.Reader }{pr})
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	if code, body := e.do(req); code != 413 {
		t.Fatalf("HTTP %d, want 413: %s", code, body)
	}
}

func TestRequestsThatAreNotAboutServices(t *testing.T) {
	e := newEnv(t, Options{})
	tests := map[string]struct {
		spec        reviewSpec
		wantAllowed bool
		wantCode    int32
		wantMsg     string
	}{
		"a Pod is an AdmissionReview error": {
			reviewSpec{kind: `{"group":"","version":"v1","kind":"Pod"}`, resource: `{"group":"","version":"v1","resource":"pods"}`, object: `{"apiVersion":"v1","kind":"Pod"}`},
			false, 400, "got request.kind v1 Pod"},
		"an apps/v1 Deployment is an AdmissionReview error": {
			reviewSpec{kind: `{"group":"apps","version":"v1","kind":"Deployment"}`, object: `{}`},
			false, 400, "got request.kind apps/v1 Deployment"},
		"a Service kind with a pods resource is an error": {
			reviewSpec{resource: `{"group":"","version":"v1","resource":"pods"}`, object: svc("a", selector)},
			false, 400, "got request.resource v1 pods"},
		"an object that is a Pod under a Service kind is an error": {
			reviewSpec{object: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`},
			false, 400, `kind "Pod" is not Service`},
		"an object that is not a JSON object is an error": {
			reviewSpec{object: `[1,2]`},
			false, 400, "cannot decode Service"},
		"a CREATE without object is an error": {
			reviewSpec{}, false, 400, "request.object is missing"},
		"an unknown operation is an error": {
			reviewSpec{op: "PATCH", object: svc("a", selector)}, false, 400, `unsupported operation "PATCH"`},
		"a DELETE is allowed without looking": {
			reviewSpec{op: "DELETE", oldObject: svc("a", selector)}, true, 0, ""},
		"a DELETE of a Pod is allowed too (never block deletes)": {
			reviewSpec{op: "DELETE", kind: `{"group":"","version":"v1","kind":"Pod"}`}, true, 0, ""},
		"a CONNECT is allowed": {
			reviewSpec{op: "CONNECT", object: `{}`}, true, 0, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, resp := e.review("/mutate", tc.spec.JSON())
			if tc.wantAllowed {
				if !resp.Allowed || resp.Patch != nil {
					t.Fatalf("want allowed without patch, got %+v", resp)
				}
				return
			}
			wantErrored(t, resp, tc.wantCode, tc.wantMsg)
		})
	}
	t.Run("an empty uid is an error", func(t *testing.T) {
		body := bytes.Replace(reviewSpec{object: svc("a", selector)}.JSON(), []byte(`"uid":"uid-1"`), []byte(`"uid":""`), 1)
		_, resp := e.review("/mutate", body)
		wantErrored(t, resp, 400, "request.uid is empty")
	})
	t.Run("services/status is allowed untouched", func(t *testing.T) {
		body := bytes.Replace(reviewSpec{op: "UPDATE", object: svc("a", selector), oldObject: svc("a", selector)}.JSON(),
			[]byte(`"namespace":"demo"`), []byte(`"subResource":"status","namespace":"demo"`), 1)
		_, resp := e.review("/mutate", body)
		if !resp.Allowed || resp.Patch != nil {
			t.Fatalf("want allowed without patch, got %+v", resp)
		}
	})
}

func TestDenialHasTheApiserverShape(t *testing.T) {
	e := newEnv(t, Options{})
	obj := svc("web", selector+`,"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4","IPv6"]`)
	for _, path := range []string{"/mutate", "/validate"} {
		t.Run(path, func(t *testing.T) {
			_, resp := e.review(path, reviewSpec{object: obj}.JSON())
			wantDenied(t, resp, `Service "web" is invalid: spec.ipFamilyPolicy: Invalid value: "SingleStack": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified`)
			if got := resp.Result.Details.Causes[0].Field; got != "spec.ipFamilyPolicy" {
				t.Errorf("cause field = %q", got)
			}
		})
	}
}

func TestDenialMatchesApiserverStatusExactly(t *testing.T) {
	errs := field.ErrorList{
		field.Invalid(field.NewPath("spec", "ipFamilies").Index(0), "IPv6", "not configured on this cluster"),
		field.Required(field.NewPath("spec", "ipFamilyPolicy"), "must be 'SingleStack' to release the secondary IP family"),
	}
	e := newEnv(t, Options{Evaluate: func(policy.Input) (*policy.Decision, error) {
		return nil, &policy.InvalidError{Name: "web", Errs: errs}
	}})
	_, resp := e.review("/mutate", reviewSpec{object: svc("web", selector)}.JSON())
	want := apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), "web", errs).Status()
	got := *resp.Result
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		t.Errorf("status differs from the apiserver's:\n got %s\nwant %s", gb, wb)
	}
	if resp.AuditAnnotations[auditDecisionKey] != outcomeDenied {
		t.Errorf("audit annotations = %v", resp.AuditAnnotations)
	}
}

func TestErrorsFromTheEngineAreMappedInOnePlace(t *testing.T) {
	tests := map[string]struct {
		err      error
		wantCode int32
		reason   metav1.StatusReason
	}{
		"a decode error is a bad request": {&policy.DecodeError{Err: errors.New("spec: want object")}, 400, metav1.StatusReasonBadRequest},
		"a wrapped decode error too":      {errors.Join(errors.New("x"), &policy.DecodeError{Err: errors.New("y")}), 400, metav1.StatusReasonBadRequest},
		"any other error is internal":     {errors.New("boom\nsecond line"), 500, metav1.StatusReasonInternalError},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Options{Evaluate: func(policy.Input) (*policy.Decision, error) { return nil, tc.err }})
			_, resp := e.review("/mutate", reviewSpec{object: svc("web", selector)}.JSON())
			wantErrored(t, resp, tc.wantCode, "")
			if resp.Result.Reason != tc.reason {
				t.Errorf("reason = %q, want %q", resp.Result.Reason, tc.reason)
			}
		})
	}
}

func TestFamiliesUnavailableIsA500(t *testing.T) {
	e := newEnv(t, Options{Families: StaticFamilies(nil)})
	_, resp := e.review("/mutate", reviewSpec{object: svc("web", selector)}.JSON())
	wantErrored(t, resp, 500, "webhook not ready: no service IP families configured")
}

func TestPanicIsRecoveredAnswered500AndCounted(t *testing.T) {
	e := newEnv(t, Options{Evaluate: func(policy.Input) (*policy.Decision, error) {
		var m map[string]int
		m["boom"]++ // nil map write: a real runtime panic
		return nil, nil
	}})
	code, body := e.post("/mutate", "application/json", reviewSpec{object: svc("web", selector)}.JSON())
	if code != 500 {
		t.Fatalf("HTTP %d, want 500: %s", code, body)
	}
	// The server survived: a second request is served.
	if code, _ := e.post("/mutate", "application/json", reviewSpec{object: svc("web", selector)}.JSON()); code != 500 {
		t.Fatalf("second request: HTTP %d", code)
	}
	if n := counterValue(t, e.h.metrics.requests.WithLabelValues("mutate", outcomeFailed)); n != 2 {
		t.Errorf("failed requests counted = %v, want 2", n)
	}
}

func TestNilDecisionIsAnInternalError(t *testing.T) {
	e := newEnv(t, Options{Evaluate: func(policy.Input) (*policy.Decision, error) { return nil, nil }})
	_, resp := e.review("/mutate", reviewSpec{object: svc("web", selector)}.JSON())
	wantErrored(t, resp, 500, "neither a decision nor an error")
}

// applyPatch applies resp's patch to obj (or returns obj unchanged).
func applyPatch(t *testing.T, obj string, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if resp.Patch == nil {
		if resp.PatchType != nil {
			t.Errorf("patchType set without a patch")
		}
		return []byte(obj)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType = %v", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch does not decode: %v: %s", err, resp.Patch)
	}
	out, err := p.Apply([]byte(obj))
	if err != nil {
		t.Fatalf("patch does not apply: %v: %s", err, resp.Patch)
	}
	return out
}

func TestMutateThenValidate(t *testing.T) {
	e := newEnv(t, Options{})
	v6first := StaticFamilies{corev1.IPv6Protocol, corev1.IPv4Protocol}
	e6 := newEnv(t, Options{Families: v6first})
	tests := map[string]struct {
		env       *testEnv
		object    string
		wantPatch string // exact JSONPatch, "" = none
		wantSpec  string // JSON of the patched spec's family fields
		warning   string
	}{
		"a plain Service gets SingleStack and the primary family": {
			e, svc("web", selector),
			`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv4"]}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"on an IPv6-first cluster the primary is IPv6": {
			e6, svc("web", selector),
			`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv6"]}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv6"]}`, ""},
		"PreferDualStack only gets its families added": {
			e, svc("web", selector+`,"ipFamilyPolicy":"PreferDualStack"`),
			`[{"op":"add","path":"/spec/ipFamilies","value":["IPv4","IPv6"]}]`,
			`{"ipFamilyPolicy":"PreferDualStack","ipFamilies":["IPv4","IPv6"]}`, ""},
		"a complete Service gets no patch at all": {
			e, svc("web", selector+`,"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]`),
			``, `{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"the legacy field is translated and removed": {
			e, svc("web", `"type":"LoadBalancer","ipFamily":"IPv6","selector":{"app":"x"},"ports":[{"port":80}]`),
			`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv6"]},{"op":"remove","path":"/spec/ipFamily"}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv6"]}`, "spec.ipFamily: IPv6 was removed in Kubernetes 1.20"},
		"a null ipFamilyPolicy is overwritten by add (RFC 6902 add replaces a member)": {
			e, svc("web", selector+`,"ipFamilyPolicy":null,"ipFamilies":["IPv4"]`),
			`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"a Service without spec gets one (exact slow path)": {
			e, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"bare","namespace":"demo"}}`,
			`[{"op":"add","path":"/spec","value":{}},{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv4"]}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"a spec holding only a null policy is read exactly: replace": {
			e, svc("web", `"ipFamilyPolicy":null`),
			`[{"op":"replace","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv4"]}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"a wrong ipFamilies order is replaced": {
			e, svc("web", selector+`,"ipFamilyPolicy":"PreferDualStack","ipFamilies":["IPv4"]`),
			`[{"op":"replace","path":"/spec/ipFamilies","value":["IPv4","IPv6"]}]`,
			`{"ipFamilyPolicy":"PreferDualStack","ipFamilies":["IPv4","IPv6"]}`, ""},
		"unknown fields survive untouched": {
			e, svc("web", selector+`,"futureField":{"keep":true}`),
			`[{"op":"add","path":"/spec/ipFamilyPolicy","value":"SingleStack"},{"op":"add","path":"/spec/ipFamilies","value":["IPv4"]}]`,
			`{"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4"]}`, ""},
		"ExternalName is skipped": {
			e, svc("ext", `"type":"ExternalName","externalName":"example.com"`), ``, `{}`, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, resp := tc.env.review("/mutate", reviewSpec{object: tc.object}.JSON())
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if string(resp.Patch) != tc.wantPatch {
				t.Errorf("patch:\n got %s\nwant %s", resp.Patch, tc.wantPatch)
			}
			out := applyPatch(t, tc.object, resp)
			var got struct {
				Spec map[string]json.RawMessage `json:"spec"`
			}
			_ = json.Unmarshal(out, &got)
			fam := map[string]json.RawMessage{}
			for _, k := range []string{"ipFamilyPolicy", "ipFamilies", "ipFamily"} {
				if v, ok := got.Spec[k]; ok {
					fam[k] = v
				}
			}
			fb, _ := json.Marshal(fam)
			var want map[string]json.RawMessage
			_ = json.Unmarshal([]byte(tc.wantSpec), &want)
			wb, _ := json.Marshal(want)
			if string(fb) != string(wb) {
				t.Errorf("patched family fields = %s, want %s", fb, wb)
			}
			// Every other member of the object is byte-for-byte what it
			// was: the patch is minimal.
			var before, after map[string]any
			_ = json.Unmarshal([]byte(tc.object), &before)
			_ = json.Unmarshal(out, &after)
			for _, m := range []map[string]any{before, after} {
				if spec, ok := m["spec"].(map[string]any); ok {
					for _, k := range []string{"ipFamilyPolicy", "ipFamilies", "ipFamily"} {
						delete(spec, k)
					}
					if len(spec) == 0 {
						delete(m, "spec")
					}
				}
			}
			bb, _ := json.Marshal(before)
			ab, _ := json.Marshal(after)
			if !bytes.Equal(bb, ab) {
				t.Errorf("patch changed other fields:\nbefore %s\nafter  %s", bb, ab)
			}
			if tc.warning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tc.warning) {
				t.Errorf("warnings %q lack %q", resp.Warnings, tc.warning)
			}
			// Re-invocation on our own output is a no-op, and /validate
			// accepts what /mutate produced.
			_, again := tc.env.review("/mutate", reviewSpec{object: string(out)}.JSON())
			if !again.Allowed || again.Patch != nil {
				t.Errorf("second /mutate pass: allowed=%v patch=%s", again.Allowed, again.Patch)
			}
			_, v := tc.env.review("/validate", reviewSpec{object: string(out)}.JSON())
			if !v.Allowed || v.Patch != nil {
				t.Errorf("/validate on the mutated object: allowed=%v patch=%s result=%+v", v.Allowed, v.Patch, v.Result)
			}
		})
	}
}

func TestUpdateWithoutPolicyIsNotDowngraded(t *testing.T) {
	e := newEnv(t, Options{})
	old := svc("web", selector+`,"clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10","fd00:10:96::a"],"ipFamilyPolicy":"PreferDualStack","ipFamilies":["IPv4","IPv6"]`)
	posted := svc("web", selector+`,"clusterIP":"10.96.0.10"`)
	_, resp := e.review("/mutate", reviewSpec{op: "UPDATE", object: posted, oldObject: old}.JSON())
	if !resp.Allowed || resp.Patch != nil {
		t.Fatalf("want allowed without patch, got allowed=%v patch=%s result=%+v", resp.Allowed, resp.Patch, resp.Result)
	}
}

// fakeNamespaces is a NamespaceGetter over a map.
type fakeNamespaces map[string]*corev1.Namespace

func (f fakeNamespaces) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if ns, ok := f[name]; ok {
		return ns, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), name)
}

func ns(name string, labels, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
}

func TestFiltersAndNamespaceDefaults(t *testing.T) {
	prefer := corev1.IPFamilyPolicyPreferDualStack
	require := corev1.IPFamilyPolicyRequireDualStack
	namespaces := fakeNamespaces{
		"skipped": ns("skipped", map[string]string{policy.SkipLabel: ""}, nil),
		"unskip":  ns("unskip", map[string]string{policy.SkipLabel: "false"}, nil),
		"require": ns("require", nil, map[string]string{policy.NamespacePolicyAnnotation: "RequireDualStack"}),
		"typo":    ns("typo", nil, map[string]string{policy.NamespacePolicyAnnotation: "DualStack"}),
		"demo":    ns("demo", nil, nil),
		"default": ns("default", nil, nil),
	}
	type result struct {
		called  bool
		policy  *corev1.IPFamilyPolicy
		allowed bool
	}
	tests := map[string]struct {
		spec          reviewSpec
		flagDefault   *corev1.IPFamilyPolicy
		wantCalled    bool
		wantDefault   *corev1.IPFamilyPolicy
		wantWarning   string
		wantSkipAudit string
	}{
		"default/kubernetes is never evaluated": {
			spec: reviewSpec{namespace: "default", name: "kubernetes", object: `{"metadata":{"name":"kubernetes","namespace":"default"},"spec":{}}`}, wantSkipAudit: "default/kubernetes"},
		"a Service in a skipped namespace is not evaluated": {
			spec: reviewSpec{namespace: "skipped", object: svc("a", selector)}, wantSkipAudit: "Namespace label"},
		"a namespace labelled skip=false does not skip": {
			spec: reviewSpec{namespace: "unskip", object: svc("a", selector)}, wantCalled: true},
		"the flag's default is passed on": {
			spec: reviewSpec{object: svc("a", selector)}, flagDefault: &prefer, wantCalled: true, wantDefault: &prefer},
		"the namespace annotation overrides the flag": {
			spec: reviewSpec{namespace: "require", object: svc("a", selector)}, flagDefault: &prefer, wantCalled: true, wantDefault: &require},
		"an invalid annotation is ignored with a warning": {
			spec: reviewSpec{namespace: "typo", object: svc("a", selector)}, flagDefault: &prefer, wantCalled: true, wantDefault: &prefer,
			wantWarning: `annotation dualstack-webhook.io/ip-family-policy="DualStack" is not one of`},
		"an unknown namespace uses the flag": {
			spec: reviewSpec{namespace: "new", object: svc("a", selector)}, flagDefault: &prefer, wantCalled: true, wantDefault: &prefer},
		"the annotation does not apply to UPDATE": {
			spec:       reviewSpec{op: "UPDATE", namespace: "require", object: svc("a", selector), oldObject: svc("a", selector)},
			wantCalled: true, wantDefault: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got result
			e := newEnv(t, Options{Namespaces: namespaces, DefaultPolicy: tc.flagDefault, Evaluate: func(in policy.Input) (*policy.Decision, error) {
				got.called = true
				got.policy = in.DefaultPolicy
				return &policy.Decision{Policy: corev1.IPFamilyPolicySingleStack, Families: in.Families[:1]}, nil
			}})
			_, resp := e.review("/mutate", tc.spec.JSON())
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if got.called != tc.wantCalled {
				t.Fatalf("engine called = %v, want %v", got.called, tc.wantCalled)
			}
			if !tc.wantCalled {
				if a := resp.AuditAnnotations[auditDecisionKey]; !strings.HasPrefix(a, "skipped: ") || !strings.Contains(a, tc.wantSkipAudit) {
					t.Errorf("audit annotation = %q, want skipped: …%s…", a, tc.wantSkipAudit)
				}
				return
			}
			if (got.policy == nil) != (tc.wantDefault == nil) || (got.policy != nil && *got.policy != *tc.wantDefault) {
				t.Errorf("DefaultPolicy = %v, want %v", deref(got.policy), deref(tc.wantDefault))
			}
			if tc.wantWarning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tc.wantWarning) {
				t.Errorf("warnings %q lack %q", resp.Warnings, tc.wantWarning)
			}
		})
	}
}

// The Service's own skip label is the engine's first check: it must win
// over anything the engine would deny.
func TestServiceSkipLabelWinsOverDenial(t *testing.T) {
	e := newEnv(t, Options{})
	invalidSpec := selector + `,"ipFamilyPolicy":"SingleStack","ipFamilies":["IPv4","IPv6"]`
	tests := map[string]struct {
		labels      string
		wantAllowed bool
	}{
		"skip=true":  {`{"dualstack-webhook.io/skip":"true"}`, true},
		"skip empty": {`{"dualstack-webhook.io/skip":""}`, true},
		"skip=false": {`{"dualstack-webhook.io/skip":"false"}`, false},
		"no label":   {`{"app":"x"}`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/mutate", "/validate"} {
				_, resp := e.review(path, reviewSpec{object: svcWithLabels("a", tc.labels, invalidSpec)}.JSON())
				if resp.Allowed != tc.wantAllowed {
					t.Fatalf("%s: allowed = %v, want %v", path, resp.Allowed, tc.wantAllowed)
				}
				if tc.wantAllowed && (resp.Patch != nil || !strings.HasPrefix(resp.AuditAnnotations[auditDecisionKey], "skipped: ")) {
					t.Errorf("%s: patch %s, audit %v", path, resp.Patch, resp.AuditAnnotations)
				}
			}
		})
	}
}

func deref(p *corev1.IPFamilyPolicy) string {
	if p == nil {
		return "<nil>"
	}
	return string(*p)
}

func TestReadyz(t *testing.T) {
	var certErr error
	e := newEnv(t, Options{Ready: []Check{{Name: "certificate", Func: func() error { return certErr }}}})
	get := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/readyz", nil)
		c, b := e.do(req)
		return c, string(b)
	}
	if c, b := get(); c != 200 || !strings.Contains(b, "[+]certificate ok") {
		t.Fatalf("ready: HTTP %d %q", c, b)
	}
	certErr = errors.New("no serving certificate loaded")
	if c, b := get(); c != 503 || !strings.Contains(b, "[-]certificate failed: no serving certificate loaded") {
		t.Fatalf("cert missing: HTTP %d %q", c, b)
	}
	certErr = nil
	e.h.Drain()
	if c, b := get(); c != 503 || !strings.Contains(b, "shutting down") {
		t.Fatalf("draining: HTTP %d %q", c, b)
	}
}

func TestMetricsCountEndpointAndOutcome(t *testing.T) {
	e := newEnv(t, Options{CertNotAfter: func() time.Time { return time.Unix(2000000000, 0) }})
	e.review("/mutate", reviewSpec{object: svc("a", selector)}.JSON())
	e.review("/mutate", reviewSpec{object: svc("a", selector+`,"ipFamilyPolicy":"Bogus"`)}.JSON())
	e.review("/validate", reviewSpec{object: svc("a", selector)}.JSON())
	e.post("/mutate", "text/plain", nil)
	for _, tc := range []struct {
		endpoint, outcome string
		want              float64
	}{
		{"mutate", outcomePatched, 1},
		{"mutate", outcomeDenied, 1},
		{"mutate", outcomeRejected, 1},
		{"validate", outcomeAllowed, 1},
	} {
		if got := counterValue(t, e.h.metrics.requests.WithLabelValues(tc.endpoint, tc.outcome)); got != tc.want {
			t.Errorf("requests{%s,%s} = %v, want %v", tc.endpoint, tc.outcome, got, tc.want)
		}
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetName() == "dualstack_webhook_http_request_duration_seconds" {
			b := mf.GetMetric()[0].GetHistogram().GetBucket()
			if len(b) != 6 || b[0].GetUpperBound() != 0.005 || b[5].GetUpperBound() != 2.5 {
				t.Errorf("buckets are not the apiserver's 5ms…2.5s: %v", b)
			}
		}
		if mf.GetName() == "dualstack_webhook_certificate_expiration_timestamp_seconds" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 2e9 {
				t.Errorf("cert expiry gauge = %v", v)
			}
		}
	}
	for _, n := range []string{"dualstack_webhook_http_requests_total", "dualstack_webhook_http_request_duration_seconds", "dualstack_webhook_certificate_expiration_timestamp_seconds"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
