package policy

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Operation is the admission operation the Service arrives with.
type Operation string

// The operations the rule book distinguishes. DELETE and CONNECT never reach
// the policy engine.
const (
	Create Operation = "CREATE"
	Update Operation = "UPDATE"
)

// Input is everything the engine looks at. It is plain data so that callers
// (the webhook, the convert command, tests, fuzzers) can build it freely.
type Input struct {
	// Families are the cluster's Service IP families, primary first: one entry
	// on a single-stack cluster, two on a dual-stack one.
	Families []corev1.IPFamily
	// Operation is Create or Update.
	Operation Operation
	// Object is the raw JSON of the Service as posted. Raw rather than typed
	// because the legacy field spec.ipFamily is unknown to today's types.
	Object []byte
	// Service, when not nil, is Object already decoded by the caller with
	// the apiserver's case-sensitive decoding (the webhook decodes the
	// AdmissionReview and the Service in one pass). Evaluate then skips its
	// own decode and takes ownership of it (it fills defaults in place).
	// Object may then be nil, which tells Evaluate that the raw object has
	// no legacy spec.ipFamily key; when Object is set it is still searched
	// for that key.
	Service *corev1.Service
	// OldObject is the raw JSON of the stored Service (Update only).
	OldObject []byte
	// DefaultPolicy, when set, replaces the apiserver's own default policy on
	// CREATE for Services that do not choose one (flag or Namespace
	// annotation, resolved by the caller). nil keeps the apiserver's default.
	DefaultPolicy *corev1.IPFamilyPolicy
}

// Field names a Service field the webhook writes with a JSONPatch op.
type Field uint8

// Fields the engine may ask the webhook to write or remove.
const (
	FieldIPFamilyPolicy Field = 1 << iota // write Decision.Policy to /spec/ipFamilyPolicy
	FieldIPFamilies                       // write Decision.Families to /spec/ipFamilies
	FieldLegacyIPFamily                   // remove /spec/ipFamily
)

// Decision is the engine's answer for a Service the apiserver would accept.
type Decision struct {
	// Skip, when non-empty, says why the webhook leaves the Service alone
	// (default/kubernetes, skip label). Only Service is set then.
	// ExternalName Services are not skipped: they get no policy or families,
	// but a legacy spec.ipFamily is still dropped.
	Skip string
	// Service is the posted object decoded into the typed v1 Service (the
	// legacy field is not part of it).
	Service *corev1.Service
	// Policy and Families are the values the apiserver ends up with.
	Policy   corev1.IPFamilyPolicy
	Families []corev1.IPFamily
	// ClusterIPs are the IPs the request already carries after the
	// apiserver's normalisation (UPDATE: including the ones inherited from
	// the stored object), in family order; ["None"] for headless Services.
	ClusterIPs []string
	// Allocate lists, in order, the families for which the apiserver would
	// allocate an IP dynamically: the pinning allocator fills exactly these.
	// Empty for headless and ExternalName Services and when every IP is given.
	Allocate []corev1.IPFamily
	// Release lists IPs the apiserver frees once the request succeeds
	// (downgrade, change to ExternalName).
	Release []string
	// Write says which fields /mutate must write or remove.
	Write Field
	// Warnings are shown to the client (admission warnings).
	Warnings []string
}

// Writes reports whether f is among the fields to write.
func (d *Decision) Writes(f Field) bool { return d.Write&f != 0 }

// InvalidError is the apiserver's 422: the Service would be rejected with
// exactly these field errors, in the apiserver's order.
type InvalidError struct {
	Name string // metadata.name (may be empty for generateName)
	Errs field.ErrorList
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("Service %q is invalid: %s", e.Name, e.Errs.ToAggregate().Error())
}

// DecodeError means the object is not a Service the engine can read.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "cannot decode Service: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }
