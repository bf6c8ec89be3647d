package webhook

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/policy"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
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
//   - allocator answers about a Service (*serviceError): an address held by
//     another Service (*alloc.ErrHeld, "held by <ns>/<name>"), outside every
//     ServiceCIDR (*alloc.ErrNotInServiceCIDR, with the apiserver's own
//     "failed to allocate IP" text) and an unknown pool annotation are 422
//     Invalid denials on the field at fault; a restricted pool that does
//     not serve the Service (*alloc.ErrPoolAccess) is a 422 Forbidden on
//     the annotation or on spec.clusterIPs, naming the pool and whom it
//     serves. Exhausted or draining pools
//     never get here: the webhook leaves the family to the apiserver.
//   - an invalid pools ConfigMap (*poolsError): 422 Invalid on
//     data[pools.yaml], listing every problem.
//   - anything else (errUnavailable, alloc.ErrNotReady, alloc.ErrContended,
//     store failures, bugs): code 500, so failurePolicy decides (Ignore for
//     defaulting, Fail for pinning/validation).
func responseForError(uid types.UID, name string, err error) (*admissionv1.AdmissionResponse, string) {
	resp := &admissionv1.AdmissionResponse{UID: uid, Allowed: false}
	if errs, kind, n, ok := denialOf(err); ok {
		if n == "" {
			n = name
		}
		st := apierrors.NewInvalid(schema.GroupKind{Kind: kind}, n, errs).Status()
		resp.Result = &st
		return resp, outcomeDenied
	}
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
	if _, _, _, ok := denialOf(err); ok {
		return false
	}
	return !errors.As(err, &invalid) && !errors.As(err, &decode) && !errors.As(err, &bad)
}

// clusterIPsPath is where the apiserver reports allocation failures
// (pkg/registry/core/service/ipallocator via the REST storage's
// allocClusterIPs: field.Invalid(spec.clusterIPs, clusterIPs, "failed to
// allocate IP ...")).
var clusterIPsPath = field.NewPath("spec", "clusterIPs")

// denialOf turns the allocator's and the pool guard's denials into field
// errors on the object's kind; ok is false for anything that is not a
// denial.
func denialOf(err error) (errs field.ErrorList, kind, name string, ok bool) {
	var se *serviceError
	if errors.As(err, &se) {
		var held *alloc.ErrHeld
		var outside *alloc.ErrNotInServiceCIDR
		var access *alloc.ErrPoolAccess
		switch {
		case errors.As(se.err, &access) && access.IP.IsValid():
			return field.ErrorList{field.Forbidden(clusterIPsPath, access.Error())}, "Service", se.name, true
		case errors.As(se.err, &access):
			p := field.NewPath("metadata", "annotations").Key(alloc.PoolAnnotation)
			return field.ErrorList{field.Forbidden(p, access.Error())}, "Service", se.name, true
		case errors.As(se.err, &held):
			return field.ErrorList{field.Invalid(clusterIPsPath, se.clusterIPs, held.Error())}, "Service", se.name, true
		case errors.As(se.err, &outside):
			// The apiserver's own words (MetaAllocator ErrMismatchedNetwork,
			// docs/dualstack-rules.md §5.3), so kubectl shows the same text
			// whether the webhook or the apiserver refuses.
			return field.ErrorList{field.Invalid(clusterIPsPath, se.clusterIPs,
				fmt.Sprintf("failed to allocate IP %s: the provided network does not match the current range", outside.IP))}, "Service", se.name, true
		case errors.Is(se.err, alloc.ErrUnknownPool):
			p := field.NewPath("metadata", "annotations").Key(alloc.PoolAnnotation)
			return field.ErrorList{field.Invalid(p, se.pool, "no pool of that name is configured (see the pools ConfigMap)")}, "Service", se.name, true
		}
		return nil, "", "", false
	}
	var pe *poolsError
	if errors.As(err, &pe) {
		p := field.NewPath("data").Key(alloc.ConfigMapKey)
		var ce *alloc.ConfigError
		if errors.As(pe.err, &ce) && len(ce.Problems) > 0 {
			for _, msg := range ce.Problems {
				errs = append(errs, field.Invalid(p, field.OmitValueType{}, msg))
			}
		} else {
			errs = field.ErrorList{field.Invalid(p, field.OmitValueType{}, oneLine(pe.err.Error()))}
		}
		return errs, "ConfigMap", pe.name, true
	}
	return nil, "", "", false
}

func errorStatus(code int32, reason metav1.StatusReason, err error) *metav1.Status {
	return &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    code,
		Reason:  reason,
		Message: oneLine(err.Error()),
	}
}
