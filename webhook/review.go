package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The webhook's names (see docs/architecture.md) are policy.SkipLabel on a Service or a
// Namespace (any value but "false" counts, so `skip: ""` and `skip: "true"`
// both work) and policy.NamespacePolicyAnnotation on a Namespace.
const (
	// auditDecisionKey is the audit annotation the webhook sets. The
	// apiserver prefixes it with the webhook's name
	// ("<webhook-name>/decision") and drops keys that are not then a
	// qualified name, so the key itself must not contain a '/' (kubernetes
	// apiserver pkg/admission/plugin/webhook/mutating/dispatcher.go and
	// pkg/admission/attributes.go:checkKeyFormat).
	auditDecisionKey = "decision"
)

// endpoint tells /mutate and /validate apart.
type endpoint uint8

const (
	mutateEndpoint   endpoint = iota // defaulting + pinning
	validateEndpoint                 // checks the final object
	defaultEndpoint                  // defaulting only: no side effects
)

func (e endpoint) String() string {
	switch e {
	case mutateEndpoint:
		return "mutate"
	case defaultEndpoint:
		return "default"
	}
	return "validate"
}

// reviewResult is the answer plus what the request log needs.
type reviewResult struct {
	resp      *admissionv1.AdmissionResponse
	outcome   string
	reason    string // why skipped / denied / errored, for the log
	namespace string
	name      string
	err       error // internal errors, logged at error level
}

// review answers one AdmissionRequest. It never returns an HTTP-level error:
// once the envelope parsed, every problem is an AdmissionReview answer.
// ctx carries the apiserver's deadline; the policy engine is pure and
// ignores it, the allocator (later) will not.
func (h *Handler) review(ctx context.Context, ep endpoint, req *requestIn) reviewResult {
	res := reviewResult{namespace: req.Namespace, name: req.Name}
	allow := func(outcome, reason string) reviewResult {
		res.resp = &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
		res.outcome, res.reason = outcome, reason
		if reason != "" {
			res.resp.AuditAnnotations = map[string]string{auditDecisionKey: outcome + ": " + reason}
		}
		return res
	}
	fail := func(err error) reviewResult {
		res.resp, res.outcome = responseForError(req.UID, res.name, err)
		res.reason = oneLine(err.Error())
		if res.outcome == outcomeDenied {
			res.resp.AuditAnnotations = map[string]string{auditDecisionKey: outcomeDenied}
		}
		if isInternal(err) {
			res.err = err
		}
		return res
	}

	if req.UID == "" {
		return fail(&requestError{"request.uid is empty"})
	}
	op := policy.Operation(req.Operation)
	switch req.Operation {
	case "CREATE", "UPDATE":
	case "DELETE", "CONNECT":
		// Nothing to default or check. Answered before the kind check on
		// purpose: a mis-scoped registration must never block deletes.
		return allow(outcomeSkipped, strings.ToLower(req.Operation)+" is not reviewed")
	default:
		return fail(&requestError{fmt.Sprintf("unsupported operation %q: want CREATE, UPDATE, DELETE or CONNECT", req.Operation)})
	}
	if ep == validateEndpoint && req.Kind.Group == "" && req.Kind.Version == "v1" && req.Kind.Kind == "ConfigMap" {
		if !req.hasObject() {
			return fail(&requestError{"request.object is missing"})
		}
		skip, err := h.reviewPools(ctx, req)
		if err != nil {
			return fail(err)
		}
		if skip != "" {
			return allow(outcomeSkipped, skip)
		}
		return allow(outcomeAllowed, "")
	}
	if req.Kind.Group != "" || req.Kind.Version != "v1" || req.Kind.Kind != "Service" {
		return fail(&requestError{fmt.Sprintf("this webhook reviews v1 Services only, got request.kind %s", gvkString(req.Kind.Group, req.Kind.Version, req.Kind.Kind))})
	}
	// request.resource is optional here only because hand-written reviews
	// (curl, CI linting) often omit it; the apiserver always sets it.
	if r := req.Resource; r != (metav1.GroupVersionResource{}) && (r.Group != "" || r.Version != "v1" || r.Resource != "services") {
		return fail(&requestError{fmt.Sprintf("this webhook reviews v1 services only, got request.resource %s", gvkString(r.Group, r.Version, r.Resource))})
	}
	if req.SubResource != "" {
		// services/status cannot change spec (the registry resets it), so
		// there is nothing to default or validate.
		return allow(outcomeSkipped, "subresource "+req.SubResource+" is not reviewed")
	}

	if !req.hasObject() {
		return fail(&requestError{"request.object is missing"})
	}

	// Pre-policy filters that need no decoding. The Service's own skip
	// label and default/kubernetes as named in the object are checked by
	// the policy engine first thing, before any rule could deny.
	if res.namespace == "default" && res.name == "kubernetes" {
		return allow(outcomeSkipped, "default/kubernetes is managed by the apiserver")
	}
	var warnings []string
	var nsLabels map[string]string
	defaultPolicy := h.defaultPolicy
	if h.namespaces != nil && res.namespace != "" {
		// Not found is treated as "no labels, no annotation": the flag's
		// default applies. (Cluster getters read through to the apiserver
		// on a cache miss, so a namespace created just before its
		// Services is not mistaken for an unannotated one.) Any other
		// error (cache not synced) is transient: answer 500 and let
		// failurePolicy decide rather than ignore a skip label.
		ns, err := h.namespaces.GetNamespace(ctx, res.namespace)
		if err != nil && !apierrors.IsNotFound(err) {
			return fail(&errUnavailable{fmt.Errorf("reading namespace %s: %w", res.namespace, err)})
		}
		if err == nil && ns != nil {
			nsLabels = ns.Labels
			if v, ok := ns.Labels[policy.SkipLabel]; ok && v != "false" {
				return allow(outcomeSkipped, "Namespace label "+policy.SkipLabel)
			}
			if v := ns.Annotations[policy.NamespacePolicyAnnotation]; v != "" && op == policy.Create {
				if p, ok := parsePolicy(v); ok {
					defaultPolicy = &p
				} else {
					// Ignored with a warning rather than denied: the
					// Service's author did not write the annotation and
					// cannot fix it, and a typo by a namespace admin must
					// not block every Service in the namespace. The
					// warning reaches kubectl; the flag's default applies.
					warnings = append(warnings, fmt.Sprintf(
						"namespace %s: annotation %s=%q is not one of SingleStack, PreferDualStack, RequireDualStack; ignored",
						res.namespace, policy.NamespacePolicyAnnotation, v))
				}
			}
		}
	}

	families, err := h.families.Families()
	if err != nil {
		return fail(&errUnavailable{err})
	}
	in := policy.Input{
		Families:      families,
		Operation:     op,
		Object:        req.Object,
		Service:       req.svc,
		DefaultPolicy: defaultPolicy,
	}
	if op == policy.Update && !isNull(req.OldObject) {
		in.OldObject = req.OldObject
	}
	d, err := h.evaluate(in)
	if err != nil {
		return fail(err)
	}
	if d == nil {
		return fail(fmt.Errorf("policy engine returned neither a decision nor an error"))
	}
	if d.Service != nil {
		if res.namespace == "" {
			res.namespace = d.Service.Namespace
		}
		if res.name == "" {
			res.name = d.Service.Name
		}
	}
	if d.Skip != "" {
		if ep == validateEndpoint && h.alloc != nil && skipLabelled(d.Service) {
			// The Service's own skip label is no way around the pools'
			// access rules or another Service's reservation: /validate
			// still checks the addresses it asks for (nothing else).
			if err := h.checkSkipped(ctx, req, d.Service, nsLabels); err != nil {
				return fail(err)
			}
		}
		return allow(outcomeSkipped, d.Skip)
	}

	res.resp = &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if ep == validateEndpoint {
		// The same engine accepts the final object: allowed. Warnings were
		// already shown by /mutate; repeating them would double them in
		// kubectl's output.
		if h.alloc != nil {
			if err := h.checkPins(ctx, req, d, nsLabels); err != nil {
				return fail(err)
			}
		}
		res.outcome = outcomeAllowed
		return res
	}
	var pinned []string
	if ep == mutateEndpoint && h.alloc != nil {
		var pinWarnings []string
		if pinned, pinWarnings, err = h.pin(ctx, req, d, nsLabels); err != nil {
			return fail(err)
		}
		warnings = append(warnings, pinWarnings...)
	}
	patch, fields, err := buildPatch(req.Object, d, pinned)
	if err != nil {
		return fail(err)
	}
	res.resp.Warnings = append(warnings, d.Warnings...)
	if patch == nil {
		res.outcome = outcomeAllowed
		return res
	}
	res.resp.Patch, res.resp.PatchType = patch, &jsonPatchType
	res.outcome = outcomePatched
	// The reason is the tail of the audit annotation: one string for both.
	var b strings.Builder
	b.Grow(64)
	b.WriteString("patched: ")
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f)
	}
	decision := b.String()
	res.reason = decision[len("patched: "):]
	res.resp.AuditAnnotations = map[string]string{auditDecisionKey: decision}
	return res
}

// jsonPatchType is what every patched answer points to (never written).
var jsonPatchType = admissionv1.PatchTypeJSONPatch

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func parsePolicy(v string) (corev1.IPFamilyPolicy, bool) {
	switch p := corev1.IPFamilyPolicy(v); p {
	case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack:
		return p, true
	}
	return "", false
}

// gvkString renders group/version/kind the way kubectl prints them
// ("apps/v1 Deployment", "v1 Pod"), with "<empty>" for missing parts.
func gvkString(group, version, kind string) string {
	if version == "" {
		version = "<no version>"
	}
	if kind == "" {
		kind = "<no kind>"
	}
	if group != "" {
		version = group + "/" + version
	}
	return version + " " + kind
}
