package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
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

type requestIn struct {
	UID         types.UID                   `json:"uid"`
	Kind        metav1.GroupVersionKind     `json:"kind"`
	Resource    metav1.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource"`
	Name        string                      `json:"name"`
	Namespace   string                      `json:"namespace"`
	Operation   string                      `json:"operation"`
	Object      json.RawMessage             `json:"object"`
	OldObject   json.RawMessage             `json:"oldObject"`
	DryRun      *bool                       `json:"dryRun"`
}

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
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, &httpError{http.StatusUnsupportedMediaType,
			fmt.Sprintf("unsupported content type %q: want application/json", r.Header.Get("Content-Type"))}
	}
	if r.ContentLength > MaxBodyBytes {
		return nil, &httpError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, MaxBodyBytes)}
	}
	// One byte over the limit is enough to know it is too large, and
	// LimitReader (unlike MaxBytesReader) needs no ResponseWriter, so the
	// decoder stays usable from fuzz tests.
	lr := &io.LimitedReader{R: r.Body, N: MaxBodyBytes + 1}
	var body []byte
	if r.ContentLength > 0 {
		// Trust Content-Length for the first allocation only up to a
		// typical review's size: a client announcing 7 MiB and sending
		// nothing must not make us hold 7 MiB per connection.
		body = make([]byte, 0, min(r.ContentLength, initialBodyBuffer))
	}
	body, err = readAll(lr, body)
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
func readAll(r io.Reader, b []byte) ([]byte, error) {
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

// decodeReview parses an AdmissionReview envelope. Errors are *httpError
// (400): without a parsed envelope there is no version to answer in and no
// uid to echo. JSON is decoded case-sensitively, as the apiserver does, so
// that "Spec" is not mistaken for "spec".
func decodeReview(body []byte) (*reviewIn, error) {
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
func encodeReview(apiVersion string, resp *admissionv1.AdmissionResponse) ([]byte, error) {
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Response: resp,
	})
}

// oneLine keeps error texts that embed input on a single line, so a reason
// is always one log/HTTP line however odd the input.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
