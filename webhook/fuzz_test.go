package webhook

import (
	"net/netip"

	"bytes"
	"encoding/json"
	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzDecodeAdmissionReview posts arbitrary bodies to /mutate and /validate
// (real policy engine, dual-stack cluster) and checks the HTTP contract:
// no panic (a recovered panic would surface as HTTP 500), only the
// documented statuses, and every 200 is a well-formed AdmissionReview in the
// version asked that echoes the uid and is not an internal error.
func FuzzDecodeAdmissionReview(f *testing.F) {
	seeds, _ := filepath.Glob("../examples/*.json")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	for _, r := range []reviewSpec{
		{object: svc("a", selector)},
		{apiVersion: apiVersionV1beta1, object: svc("a", selector+`,"ipFamilyPolicy":"RequireDualStack"`)},
		{op: "UPDATE", object: svc("a", selector+`,"ipFamily":"IPv4"`), oldObject: svc("a", selector+`,"clusterIP":"10.96.0.1"`)},
		{kind: `{"group":"","version":"v1","kind":"Pod"}`, object: `{}`},
		{object: `{"spec":null}`},
		{object: svc("a", `"type":"ExternalName","externalName":"x"`)},
	} {
		f.Add(r.JSON())
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Service"},"operation":"CREATE","object":{"spec":"x"}}}`))
	f.Add([]byte(`{`))

	f.Add(poolsReview("u", "UPDATE", "pools", tinyPools).JSON())
	f.Add(reviewSpec{object: svc("pinned", selector+`,"clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10","fd00:10:96::10"],"ipFamilyPolicy":"PreferDualStack"`)}.JSON())

	// Pinning on, from a tiny pool so that exhaustion is reached too.
	cfg, err := alloc.ParseConfig([]byte(tinyPools))
	if err != nil {
		f.Fatal(err)
	}
	pools, err := alloc.Compile(cfg, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")})
	if err != nil {
		f.Fatal(err)
	}
	a, err := alloc.New(memory.New(), pools, alloc.Options{})
	if err != nil {
		f.Fatal(err)
	}
	h, err := NewHandler(Options{Log: zap.NewNop(), Evaluate: evaluateReal, Families: dualV4V6, Allocator: a, Namespace: "dualstack-webhook", PoolsConfigMap: "pools"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{"/mutate", "/default", "/validate"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK:
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
				if bytes.Count(bytes.TrimSuffix(rec.Body.Bytes(), []byte("\n")), []byte("\n")) != 0 {
					t.Fatalf("%s: multi-line reason %q", path, rec.Body.Bytes())
				}
				continue
			default:
				t.Fatalf("%s: HTTP %d: %s", path, rec.Code, rec.Body.Bytes())
			}
			var in struct {
				APIVersion string `json:"apiVersion"`
				Request    struct {
					UID string `json:"uid"`
				} `json:"request"`
			}
			_ = json.Unmarshal(body, &in)
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("%s: 200 without an AdmissionReview (%v): %s", path, err, rec.Body.Bytes())
			}
			if out.APIVersion != in.APIVersion && in.APIVersion != "" {
				t.Fatalf("%s: answered %q to %q", path, out.APIVersion, in.APIVersion)
			}
			if r := out.Response.Result; r != nil && r.Code >= 500 {
				t.Fatalf("%s: internal error for input %q: %s", path, body, r.Message)
			}
			if !out.Response.Allowed && out.Response.Result == nil {
				t.Fatalf("%s: denied without a status", path)
			}
		}
	})
}
