package webhook

import (
	"errors"
	"net/http"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// requestError is a review the webhook cannot process because of what the
// request says (wrong kind, unknown operation, an object that is not a JSON
// object). Answered as an AdmissionReview error with code 400.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

// errUnavailable wraps transient failures of the webhook's own dependencies
// (families not discovered yet, caches not synced). Answered with code 500
// so that the webhook's failurePolicy applies, as for any other internal
// error; kept distinct so logs and metrics can tell it apart from bugs.
type errUnavailable struct{ err error }

func (e *errUnavailable) Error() string { return "webhook not ready: " + e.err.Error() }
func (e *errUnavailable) Unwrap() error { return e.err }

// Outcomes label metrics and logs. They are a closed set so the metric's
// cardinality is fixed.
const (
	outcomeAllowed  = "allowed"  // allowed, nothing to change
	outcomePatched  = "patched"  // allowed with a JSONPatch
	outcomeSkipped  = "skipped"  // left alone on purpose (skip label, default/kubernetes, DELETE, ...)
	outcomeDenied   = "denied"   // the apiserver would reject the Service: 422
	outcomeErrored  = "errored"  // AdmissionReview error (bad request or internal error)
	outcomeRejected = "rejected" // HTTP 4xx before an AdmissionReview could be parsed
	outcomeFailed   = "failed"   // HTTP 5xx (panic)
	outcomeOK       = "ok"       // health endpoints
	outcomeUnready  = "unready"  // /readyz failing
)

// responseForError is the one place where errors become admission answers.
//
//   - *policy.InvalidError: the apiserver would reject the Service. Denied
//     with exactly the Status the apiserver builds (422, reason Invalid,
//     message and details.causes from the same field.ErrorList), so that
//     kubectl shows the same text whether we or the apiserver reject.
//   - *policy.DecodeError, *requestError: the request is wrong; code 400.
//   - anything else (errUnavailable, bugs): code 500, so failurePolicy
//     decides (Ignore for defaulting, Fail for pinning/validation).
func responseForError(uid types.UID, name string, err error) (*admissionv1.AdmissionResponse, string) {
	resp := &admissionv1.AdmissionResponse{UID: uid, Allowed: false}
	var invalid *policy.InvalidError
	var decode *policy.DecodeError
	var bad *requestError
	switch {
	case errors.As(err, &invalid):
		n := invalid.Name
		if n == "" {
			n = name
		}
		st := apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, n, invalid.Errs).Status()
		resp.Result = &st
		return resp, outcomeDenied
	case errors.As(err, &decode), errors.As(err, &bad):
		resp.Result = errorStatus(http.StatusBadRequest, metav1.StatusReasonBadRequest, err)
		return resp, outcomeErrored
	default:
		resp.Result = errorStatus(http.StatusInternalServerError, metav1.StatusReasonInternalError, err)
		return resp, outcomeErrored
	}
}

// isInternal reports whether err is the webhook's fault rather than the
// request's: such errors are logged at error level.
func isInternal(err error) bool {
	var invalid *policy.InvalidError
	var decode *policy.DecodeError
	var bad *requestError
	return !errors.As(err, &invalid) && !errors.As(err, &decode) && !errors.As(err, &bad)
}

func errorStatus(code int32, reason metav1.StatusReason, err error) *metav1.Status {
	return &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    code,
		Reason:  reason,
		Message: oneLine(err.Error()),
	}
}
