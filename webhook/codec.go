package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kjson "sigs.k8s.io/json"
)

// MaxBodyBytes bounds the request body. Rationale copied from
// controller-runtime (pkg/webhook/admission/http.go, maxRequestSize): the
// apiserver accepts objects of at most 3 MiB (etcd's request limit, with room
// for the JSON→proto size difference); an AdmissionReview carries at most
// two of them (object and oldObject) plus an envelope well under 1 MiB, hence
// 7 MiB. Anything larger cannot come from a kube-apiserver.
const MaxBodyBytes = 7 << 20

// initialBodyBuffer covers an AdmissionReview of a Service with managed
// fields and both objects in one allocation; larger bodies grow as read.
const initialBodyBuffer = 64 << 10

// The AdmissionReview versions the webhook speaks. The apiserver sends the
// first version listed in admissionReviewVersions that it supports and
// requires the answer in the same version.
const (
	apiVersionV1      = "admission.k8s.io/v1"
	apiVersionV1beta1 = "admission.k8s.io/v1beta1"
)

// reviewIn is the part of an AdmissionReview the webhook reads. v1 and
// v1beta1 have the same JSON shape; only apiVersion differs. Decoding into
// this narrow struct instead of admissionv1.AdmissionReview skips userInfo
// and options, which the webhook never looks at.
type reviewIn struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Request    *requestIn `json:"request"`
}

// requestHead is everything of a request but its object.
type requestHead struct {
	UID         types.UID                   `json:"uid"`
	Kind        metav1.GroupVersionKind     `json:"kind"`
	Resource    metav1.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource"`
	Name        string                      `json:"name"`
	Namespace   string                      `json:"namespace"`
	Operation   string                      `json:"operation"`
	OldObject   json.RawMessage             `json:"oldObject"`
	DryRun      *bool                       `json:"dryRun"`
}

// requestIn is a request as the review reads it: the object either raw
// (Object) or, on the fast path, already decoded (svc, with Object nil).
type requestIn struct {
	requestHead
	Object json.RawMessage `json:"object"`
	svc    *corev1.Service
}

// hasObject tells whether request.object is present and not null.
func (r *requestIn) hasObject() bool { return r.svc != nil || !isNull(r.Object) }

func (r *requestIn) dryRun() bool { return r.DryRun != nil && *r.DryRun }

// httpError is a failure answered with a bare HTTP status and a one-line
// text body, used only before an AdmissionReview envelope could be parsed
// (there is then no uid to answer to).
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// readBody enforces the content type and the size limit and returns the
// body. Errors are *httpError.
func readBody(r *http.Request) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	if ct != "application/json" { // what the apiserver sends; anything else is parsed
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &httpError{http.StatusUnsupportedMediaType,
				fmt.Sprintf("unsupported content type %q: want application/json", ct)}
		}
	}
	if r.ContentLength > MaxBodyBytes {
		return nil, &httpError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, MaxBodyBytes)}
	}
	// One byte over the limit is enough to know it is too large, and
	// LimitReader (unlike MaxBytesReader) needs no ResponseWriter, so the
	// decoder stays usable from fuzz tests.
	lr := io.LimitedReader{R: r.Body, N: MaxBodyBytes + 1}
	var body []byte
	var err error
	if r.ContentLength > 0 {
		// Trust Content-Length for the first allocation only up to a
		// typical review's size: a client announcing 7 MiB and sending
		// nothing must not make us hold 7 MiB per connection. One byte
		// more than announced lets the read that sees EOF find room
		// instead of growing a full buffer.
		body = make([]byte, 0, min(r.ContentLength+1, initialBodyBuffer))
	}
	body, err = readAll(&lr, body)
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, "reading request body: " + oneLine(err.Error())}
	}
	if int64(len(body)) > MaxBodyBytes {
		return nil, &httpError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body exceeds the limit of %d bytes", MaxBodyBytes)}
	}
	if len(body) == 0 {
		return nil, &httpError{http.StatusBadRequest, "empty request body: want an AdmissionReview"}
	}
	return body, nil
}

// readAll is io.ReadAll appending to a caller-sized buffer, so a typical
// request with a Content-Length is read with a single allocation.
func readAll(r *io.LimitedReader, b []byte) ([]byte, error) {
	if cap(b) == 0 {
		b = make([]byte, 0, 4096)
	}
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return b, nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// The fast path decodes the envelope and the Service in one pass.
type (
	reviewFast struct {
		APIVersion string       `json:"apiVersion"`
		Kind       string       `json:"kind"`
		Request    *requestFast `json:"request"`
	}
	requestFast struct {
		requestHead
		Object *corev1.Service `json:"object"`
	}
)

var (
	objectKey  = []byte(`"object"`)
	legacyKey  = []byte(`"ipFamily"`)
	escapeSeq  = []byte(`\u`)
	serviceGVK = metav1.GroupVersionKind{Version: "v1", Kind: "Service"}
)

// decodeReview parses an AdmissionReview envelope. Errors are *httpError
// (400): without a parsed envelope there is no version to answer in and no
// uid to echo. JSON is decoded case-sensitively, as the apiserver does, so
// that "Spec" is not mistaken for "spec".
//
// A review of a Service as the apiserver sends it is decoded in one pass,
// request.object straight into a v1.Service (decodeFast); everything else
// (other kinds, legacy spec.ipFamily, objects without a spec, any error)
// takes the general path, which keeps request.object raw for the policy
// engine to decode, so errors and answers are those of the general path.
func decodeReview(body []byte) (*reviewIn, error) {
	if in := decodeFast(body); in != nil {
		return in, nil
	}
	return decodeGeneral(body)
}

// decodeFast returns nil unless the fast path gives exactly what
// decodeGeneral followed by the policy engine's decode would give. That is
// the case when the review has a single "object" member (with duplicate
// members the general path keeps the last raw value while a typed decode
// would merge them; no \u escape can spell a second one), no legacy
// "ipFamily" key (the engine reads it from the raw object) and a Service
// with a spec (the patch builder reads the raw object otherwise).
func decodeFast(body []byte) *reviewIn {
	if bytes.Count(body, objectKey) != 1 || bytes.Contains(body, legacyKey) || bytes.Contains(body, escapeSeq) {
		return nil
	}
	// One allocation for the decoded and the returned envelope. The
	// request is decoded into the preset box.rf: a review without a
	// "request" member leaves it without an object, which is not taken.
	box := &struct {
		f   reviewFast
		rf  requestFast
		in  reviewIn
		req requestIn
	}{}
	box.f.Request = &box.rf
	f := &box.f
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, f); err != nil {
		return nil
	}
	if (f.APIVersion != apiVersionV1 && f.APIVersion != apiVersionV1beta1) || f.Kind != "AdmissionReview" ||
		f.Request == nil || f.Request.Object == nil || f.Request.Kind != serviceGVK || !specEvidence(&f.Request.Object.Spec) {
		return nil
	}
	box.req = requestIn{requestHead: f.Request.requestHead, svc: f.Request.Object}
	box.in = reviewIn{APIVersion: f.APIVersion, Kind: f.Kind, Request: &box.req}
	return &box.in
}

func decodeGeneral(body []byte) (*reviewIn, error) {
	var in reviewIn
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
		return nil, &httpError{http.StatusBadRequest, "malformed AdmissionReview: " + oneLine(err.Error())}
	}
	switch in.APIVersion {
	case apiVersionV1, apiVersionV1beta1:
	default:
		return nil, &httpError{http.StatusBadRequest,
			fmt.Sprintf("unsupported apiVersion %q: want %s or %s", in.APIVersion, apiVersionV1, apiVersionV1beta1)}
	}
	if in.Kind != "AdmissionReview" {
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("unsupported kind %q: want AdmissionReview", in.Kind)}
	}
	if in.Request == nil {
		return nil, &httpError{http.StatusBadRequest, "AdmissionReview has no request"}
	}
	return &in, nil
}

// encodeReview renders the answer in the apiVersion the request used.
// Answers without a status (every allowed review) are written by hand, byte
// for byte what encoding/json writes for them (TestEncodeReviewMatchesJSON),
// without its reflection and allocations; denials and errors carry a
// metav1.Status and go through encoding/json.
func encodeReview(apiVersion string, resp *admissionv1.AdmissionResponse) ([]byte, error) {
	if resp == nil || resp.Result != nil {
		return json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
			Response: resp,
		})
	}
	n := 256 + len(resp.UID) + base64.StdEncoding.EncodedLen(len(resp.Patch))
	for k, v := range resp.AuditAnnotations {
		n += len(k) + len(v) + 8
	}
	for _, w := range resp.Warnings {
		n += len(w) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, `{"kind":"AdmissionReview",`...)
	if apiVersion != "" {
		b = append(b, `"apiVersion":`...)
		b = appendJSONString(b, apiVersion)
		b = append(b, ',')
	}
	b = append(b, `"response":{"uid":`...)
	b = appendJSONString(b, string(resp.UID))
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, resp.Allowed)
	if len(resp.Patch) > 0 {
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, resp.Patch)
		b = append(b, '"')
	}
	if resp.PatchType != nil {
		b = append(b, `,"patchType":`...)
		b = appendJSONString(b, string(*resp.PatchType))
	}
	if len(resp.AuditAnnotations) > 0 {
		b = append(b, `,"auditAnnotations":{`...)
		if len(resp.AuditAnnotations) == 1 {
			for k, v := range resp.AuditAnnotations {
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONString(b, v)
			}
		} else {
			for i, k := range slices.Sorted(maps.Keys(resp.AuditAnnotations)) {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONString(b, resp.AuditAnnotations[k])
			}
		}
		b = append(b, '}')
	}
	if len(resp.Warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range resp.Warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, w)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...), nil
}

// appendJSONString appends s as encoding/json.Marshal writes a string: HTML
// characters, control characters, U+2028 and U+2029 escaped, invalid UTF-8
// replaced by \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// oneLine keeps error texts that embed input on a single line, so a reason
// is always one log/HTTP line however odd the input.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
