package webhook

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
)

var dualV4V6 = StaticFamilies{corev1.IPv4Protocol, corev1.IPv6Protocol}

// testEnv is a Handler behind a real TLS listener.
type testEnv struct {
	t      *testing.T
	h      *Handler
	reg    *prometheus.Registry
	srv    *httptest.Server
	client *http.Client
}

func newEnv(t *testing.T, o Options) *testEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Registry = reg
	if o.Evaluate == nil {
		o.Evaluate = policy.Evaluate
	}
	if o.Families == nil {
		o.Families = dualV4V6
	}
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &testEnv{t: t, h: h, reg: reg, srv: srv, client: srv.Client()}
}

// post sends body to path with the given content type and returns status
// and body.
func (e *testEnv) post(path, contentType string, body []byte) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.do(req)
}

func (e *testEnv) do(req *http.Request) (int, []byte) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// review posts an AdmissionReview and decodes the answer, failing the test
// unless the HTTP status is 200 and the envelope is well formed.
func (e *testEnv) review(path string, body []byte) (string, *admissionv1.AdmissionResponse) {
	e.t.Helper()
	code, b := e.post(path, "application/json", body)
	if code != http.StatusOK {
		e.t.Fatalf("POST %s: HTTP %d: %s", path, code, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		e.t.Fatalf("answer is not an AdmissionReview: %v: %s", err, b)
	}
	if out.Kind != "AdmissionReview" || out.Response == nil {
		e.t.Fatalf("answer lacks kind or response: %s", b)
	}
	return out.APIVersion, out.Response
}

// reviewJSON builds an AdmissionReview around a Service manifest.
type reviewSpec struct {
	apiVersion string // default admission.k8s.io/v1
	uid        string // default "uid-1"
	op         string // default CREATE
	kind       string // request.kind JSON, default v1 Service
	resource   string // request.resource JSON, default v1 services
	namespace  string // default "demo"
	name       string // default from the object
	object     string // raw JSON
	oldObject  string
	dryRun     bool
}

func (r reviewSpec) JSON() []byte {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&r.apiVersion, apiVersionV1)
	def(&r.uid, "uid-1")
	def(&r.op, "CREATE")
	def(&r.kind, `{"group":"","version":"v1","kind":"Service"}`)
	def(&r.resource, `{"group":"","version":"v1","resource":"services"}`)
	def(&r.namespace, "demo")
	def(&r.object, "null")
	def(&r.oldObject, "null")
	return fmt.Appendf(nil, `{"apiVersion":%q,"kind":"AdmissionReview","request":{"uid":%q,"kind":%s,"resource":%s,`+
		`"namespace":%q,"name":%q,"operation":%q,"userInfo":{"username":"alice"},"object":%s,"oldObject":%s,"dryRun":%t}}`,
		r.apiVersion, r.uid, r.kind, r.resource, r.namespace, r.name, r.op, r.object, r.oldObject, r.dryRun)
}

// svc renders a Service manifest with the given spec members (JSON text).
func svc(name string, spec string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"demo"},"spec":{%s}}`, name, spec)
}

func svcWithLabels(name, labels, spec string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"demo","labels":%s},"spec":{%s}}`, name, labels, spec)
}

const selector = `"type":"ClusterIP","selector":{"app":"x"},"ports":[{"port":80,"protocol":"TCP","targetPort":80}]`

// wantDenied checks the apiserver's 422 shape.
func wantDenied(t *testing.T, resp *admissionv1.AdmissionResponse, msgPart string) {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("allowed, want denied")
	}
	st := resp.Result
	if st == nil || st.Code != 422 || st.Reason != "Invalid" || st.Status != "Failure" {
		t.Fatalf("status = %+v, want code 422 reason Invalid", st)
	}
	if !strings.Contains(st.Message, msgPart) {
		t.Errorf("message %q does not contain %q", st.Message, msgPart)
	}
	if st.Details == nil || len(st.Details.Causes) == 0 || st.Details.Kind != "Service" {
		t.Errorf("details = %+v, want kind Service and causes", st.Details)
	}
	if !k8serrors.IsInvalid(&k8serrors.StatusError{ErrStatus: *st}) {
		t.Errorf("client-go does not see this status as Invalid")
	}
}

// wantErrored checks an AdmissionReview error answer.
func wantErrored(t *testing.T, resp *admissionv1.AdmissionResponse, code int32, msgPart string) {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("allowed, want an error")
	}
	if resp.Result == nil || resp.Result.Code != code {
		t.Fatalf("result = %+v, want code %d", resp.Result, code)
	}
	if !strings.Contains(resp.Result.Message, msgPart) {
		t.Errorf("message %q does not contain %q", resp.Result.Message, msgPart)
	}
	if strings.ContainsAny(resp.Result.Message, "\n\r") {
		t.Errorf("message is not one line: %q", resp.Result.Message)
	}
}

// evaluateReal is the production engine.
var evaluateReal Evaluator = policy.Evaluate
