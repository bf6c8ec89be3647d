package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
)

// Names the webhook reserves (documented in the README and docs/architecture.md).
const (
	// SkipLabel on a Service or Namespace makes the webhook leave it alone.
	SkipLabel = "dualstack-webhook.io/skip"
	// NamespacePolicyAnnotation on a Namespace sets the default
	// ipFamilyPolicy for Services created in it.
	NamespacePolicyAnnotation = "dualstack-webhook.io/ip-family-policy"
)

var (
	legacyPath = specPath.Child("ipFamily")
	// legacyKey is the JSON member name of the alpha field. An escaped
	// spelling (\u0069pFamily) would slip past this pre-check; the apiserver
	// never produces one and the field is dead on 1.20+ anyway.
	legacyKey = []byte(`"ipFamily"`)
)

// Evaluate runs the apiserver's dual-stack rules on the Service in in and
// returns what the apiserver would end up with, or an *InvalidError with the
// apiserver's own field errors, or a *DecodeError for input that is not a
// Service at all. It never panics on any input.
func Evaluate(in Input) (*Decision, error) {
	c, err := clusterOf(in.Families)
	if err != nil {
		return nil, err
	}
	var svc *corev1.Service
	var legacy json.RawMessage
	if in.Service != nil {
		svc = in.Service
		if err := checkDecoded(svc); err != nil {
			return nil, err
		}
		if in.Object != nil {
			legacy = legacyOf(bytes.TrimSpace(in.Object))
		}
	} else if svc, legacy, err = decode(in.Object); err != nil {
		return nil, err
	}
	d := &Decision{Service: svc}
	if reason := skipReason(svc); reason != "" {
		d.Skip = reason
		return d, nil
	}
	switch in.Operation {
	case Create:
		return evaluateCreate(in, c, svc, legacy, d)
	case Update:
		old, _, err := decode(in.OldObject)
		if err != nil {
			return nil, &DecodeError{Err: fmt.Errorf("oldObject: %w", err)}
		}
		return evaluateUpdate(c, svc, old, legacy, d)
	default:
		return nil, &DecodeError{Err: fmt.Errorf("operation %q is not CREATE or UPDATE", in.Operation)}
	}
}

// SkipReason tells why the webhook must not touch a Service at all, or "".
func skipReason(svc *corev1.Service) string {
	if svc.Namespace == "default" && svc.Name == "kubernetes" {
		// The apiserver's own Service: its IP is in the apiserver's
		// serving certificate.
		return "default/kubernetes is managed by the apiserver"
	}
	if v, ok := svc.Labels[SkipLabel]; ok && v != "false" {
		return "label " + SkipLabel
	}
	return ""
}

func clusterOf(fams []corev1.IPFamily) (cluster, error) {
	switch {
	case len(fams) == 1 && (fams[0] == corev1.IPv4Protocol || fams[0] == corev1.IPv6Protocol):
	case len(fams) == 2 && fams[0] != fams[1] && slices.Contains(fams, corev1.IPv4Protocol) && slices.Contains(fams, corev1.IPv6Protocol):
	default:
		return nil, fmt.Errorf("cluster families %v: want IPv4, IPv6 or both, primary first", fams)
	}
	return cluster(fams), nil
}

// decode reads a Service the way the apiserver does (case-sensitive field
// names) and also the raw legacy spec.ipFamily, which today's types drop.
func decode(raw []byte) (*corev1.Service, json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil, &DecodeError{Err: errors.New("no object")}
	}
	svc := &corev1.Service{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, svc); err != nil {
		return nil, nil, &DecodeError{Err: err}
	}
	if err := checkDecoded(svc); err != nil {
		return nil, nil, err
	}
	return svc, legacyOf(raw), nil
}

// checkDecoded does what decode does after unmarshalling: it rejects
// objects of another kind and fills the spec.type that v1 defaulting
// would have set.
func checkDecoded(svc *corev1.Service) error {
	if svc.Kind != "" && svc.Kind != "Service" {
		return &DecodeError{Err: fmt.Errorf("kind %q is not Service", svc.Kind)}
	}
	if svc.APIVersion != "" && svc.APIVersion != "v1" {
		return &DecodeError{Err: fmt.Errorf("apiVersion %q is not v1", svc.APIVersion)}
	}
	if svc.Spec.Type == "" {
		// v1 defaulting runs before admission; objects posted by hand
		// may lack it.
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	return nil
}

// legacyOf returns the raw legacy spec.ipFamily of a Service that decoded,
// or nil.
func legacyOf(raw []byte) json.RawMessage {
	// The second pass for the legacy key costs as much as the first, and
	// no object of a 1.20+ apiserver carries the key: look before decoding.
	if !bytes.Contains(raw, legacyKey) {
		return nil
	}
	var shape struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	// Cannot fail where the typed decode succeeded.
	_ = kjson.UnmarshalCaseSensitivePreserveInts(raw, &shape)
	legacy := shape.Spec["ipFamily"]
	if bytes.Equal(bytes.TrimSpace(legacy), []byte("null")) {
		legacy = nil
	}
	return legacy
}

func invalid(svc *corev1.Service, errs field.ErrorList) error {
	return &InvalidError{Name: svc.Name, Errs: errs}
}

func evaluateCreate(in Input, c cluster, posted *corev1.Service, legacy json.RawMessage, d *Decision) (*Decision, error) {
	svc := specCopy(posted)
	if legacy != nil {
		if err := translateLegacyCreate(svc, legacy, c, d); err != nil {
			return nil, err
		}
	}
	normalizeClusterIPs(svc, nil)

	defaultPolicy := EffectiveDefault(in.DefaultPolicy, len(c))
	if in.DefaultPolicy != nil && defaultPolicy == nil && takesDefault(svc) {
		d.Warnings = append(d.Warnings, fmt.Sprintf(
			"default ipFamilyPolicy %s does not fit this single-stack cluster; the apiserver default applies",
			*in.DefaultPolicy))
	}
	res, errs := createFields(svc, c, defaultPolicy)
	if len(errs) > 0 {
		return nil, invalid(svc, errs)
	}
	fill(d, res, nil)
	d.Warnings = append(d.Warnings, ipWarnings(res)...)
	if !isExternalName(res) {
		if posted.Spec.IPFamilyPolicy == nil || *posted.Spec.IPFamilyPolicy != d.Policy {
			d.Write |= FieldIPFamilyPolicy
		}
		if !slices.Equal(posted.Spec.IPFamilies, d.Families) {
			d.Write |= FieldIPFamilies
		}
	}
	return d, nil
}

// specCopy copies what the create pipeline writes: clusterIP(s),
// ipFamilies and ipFamilyPolicy (the pipeline only reassigns them, appends
// to them or reslices them; the copies have no spare capacity, so appends
// cannot reach the posted object). The rest is shared with posted, which
// the pipeline only reads (TestEvaluateCreateLeavesPosted). A DeepCopy was
// a quarter of a review's allocations.
func specCopy(posted *corev1.Service) *corev1.Service {
	svc := new(corev1.Service)
	*svc = *posted
	svc.Spec.ClusterIPs = slices.Clip(slices.Clone(posted.Spec.ClusterIPs))
	svc.Spec.IPFamilies = slices.Clip(slices.Clone(posted.Spec.IPFamilies))
	return svc
}

// EffectiveDefault is the configured default ipFamilyPolicy as it applies on
// a cluster with the given number of Service IP families: RequireDualStack
// does not fit a single-stack cluster and is dropped (nil: the apiserver's
// own default applies). Every other default fits wherever the apiserver's
// default does: SingleStack is that default, and PreferDualStack and
// RequireDualStack on a dual-stack cluster only relax the checks a
// SingleStack Service must pass. So a configured default never turns a
// Service the apiserver accepts into a rejected one, and a Service it
// rejects gets the errors of the policy it was given.
//
// The rule depends on the cluster only, not on the Service, so that the
// MutatingAdmissionPolicy rendering of the default (render-policy) can apply
// it exactly: CEL sees the cluster's families but cannot run the validation.
func EffectiveDefault(p *corev1.IPFamilyPolicy, clusterFamilies int) *corev1.IPFamilyPolicy {
	if p != nil && *p == corev1.IPFamilyPolicyRequireDualStack && clusterFamilies < 2 {
		return nil
	}
	return p
}

// takesDefault reports whether a CREATE of svc gets the configured default
// at all: no policy of its own, not ExternalName, and not a selectorless
// headless Service (which the apiserver always makes RequireDualStack).
func takesDefault(svc *corev1.Service) bool {
	return svc.Spec.IPFamilyPolicy == nil && !isExternalName(svc) &&
		!(svc.Spec.ClusterIP == none && len(svc.Spec.Selector) == 0)
}

// createFields runs the create pipeline on svc, the caller's own copy
// (specCopy), and returns it.
func createFields(in *corev1.Service, c cluster, defaultPolicy *corev1.IPFamilyPolicy) (*corev1.Service, field.ErrorList) {
	svc := in
	if errs := initIPFamilyFields(svc, nil, c, defaultPolicy); len(errs) > 0 {
		return svc, errs
	}
	if errs := validateService(svc, nil); len(errs) > 0 {
		return svc, errs
	}
	return svc, nil
}

func evaluateUpdate(c cluster, posted, old *corev1.Service, legacy json.RawMessage, d *Decision) (*Decision, error) {
	svc := posted.DeepCopy()
	old = old.DeepCopy()
	defaultOnRead(old, c)
	if legacy != nil {
		if err := translateLegacyUpdate(svc, old, legacy, d); err != nil {
			return nil, err
		}
	}
	patchAllocatedValues(svc, old)
	normalizeClusterIPs(svc, old)
	if errs := initIPFamilyFields(svc, old, c, nil); len(errs) > 0 {
		return nil, invalid(svc, errs)
	}
	allocate, release := allocation(svc, old)
	dropTypeDependentFields(svc, old)
	if errs := validateUpdate(svc, old); len(errs) > 0 {
		return nil, invalid(svc, errs)
	}
	fill(d, svc, old)
	d.Allocate, d.Release = allocate, release
	d.Warnings = append(d.Warnings, ipWarnings(svc)...)
	// Nothing else is written on UPDATE: the apiserver inherits the old
	// policy itself, and writing one here would turn a no-op PUT of a
	// dual-stack Service into a downgrade.
	return d, nil
}

// fill copies the apiserver's outcome into the decision.
func fill(d *Decision, svc, old *corev1.Service) {
	if svc.Spec.IPFamilyPolicy != nil {
		d.Policy = *svc.Spec.IPFamilyPolicy
	}
	d.Families = slices.Clone(svc.Spec.IPFamilies)
	d.ClusterIPs = slices.Clone(svc.Spec.ClusterIPs)
	if old == nil {
		d.Allocate, d.Release = allocation(svc, nil)
	}
}

// translateLegacyCreate rewrites the alpha field spec.ipFamily (1.16-1.19)
// to what it meant: one IP of that family, i.e. SingleStack + [X].
func translateLegacyCreate(svc *corev1.Service, raw json.RawMessage, c cluster, d *Decision) error {
	d.Write |= FieldLegacyIPFamily
	if isExternalName(svc) {
		d.Warnings = append(d.Warnings, "spec.ipFamily was removed in Kubernetes 1.20 and has no meaning for ExternalName Services: dropped")
		return nil
	}
	var x string
	if err := json.Unmarshal(raw, &x); err != nil {
		var v any
		_ = json.Unmarshal(raw, &v)
		return invalid(svc, field.ErrorList{field.Invalid(legacyPath, v, allowedFamiliesMsg(c))})
	}
	fam := corev1.IPFamily(x)
	if (fam != corev1.IPv4Protocol && fam != corev1.IPv6Protocol) || !c.has(fam) {
		return invalid(svc, field.ErrorList{field.Invalid(legacyPath, x, allowedFamiliesMsg(c))})
	}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != none {
		if got := familyOf(ip); got != fam {
			return invalid(svc, field.ErrorList{field.Invalid(legacyPath, x, fmt.Sprintf("does not match %s cluster IP", got))})
		}
	}
	if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] != fam {
		return invalid(svc, field.ErrorList{field.Invalid(legacyPath, x,
			fmt.Sprintf("conflicts with spec.ipFamilies[0] (%q)", svc.Spec.IPFamilies[0]))})
	}
	var did []string
	if len(svc.Spec.IPFamilies) == 0 {
		svc.Spec.IPFamilies = []corev1.IPFamily{fam}
		did = append(did, fmt.Sprintf("ipFamilies: [%s]", fam))
	}
	if svc.Spec.IPFamilyPolicy == nil {
		svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicySingleStack)
		did = append(did, "ipFamilyPolicy: SingleStack")
	}
	msg := fmt.Sprintf("spec.ipFamily: %s was removed in Kubernetes 1.20", fam)
	if len(did) > 0 {
		msg += "; rewritten as " + strings.Join(did, ", ")
	} else {
		msg += "; dropped (ipFamilies and ipFamilyPolicy already say it)"
	}
	d.Warnings = append(d.Warnings, msg)
	return nil
}

// translateLegacyUpdate: spec.ipFamily was immutable; a stale manifest that
// still carries the right value must not downgrade anything, so it is only
// dropped.
func translateLegacyUpdate(svc, old *corev1.Service, raw json.RawMessage, d *Decision) error {
	d.Write |= FieldLegacyIPFamily
	if isExternalName(svc) || isExternalName(old) {
		d.Warnings = append(d.Warnings, "spec.ipFamily was removed in Kubernetes 1.20 and has no meaning for ExternalName Services: dropped")
		return nil
	}
	var x string
	err := json.Unmarshal(raw, &x)
	if err != nil || len(old.Spec.IPFamilies) == 0 || corev1.IPFamily(x) != old.Spec.IPFamilies[0] {
		var v any = x
		if err != nil {
			_ = json.Unmarshal(raw, &v)
		}
		return invalid(svc, field.ErrorList{field.Invalid(legacyPath, v, "field is immutable")})
	}
	d.Warnings = append(d.Warnings, fmt.Sprintf("spec.ipFamily: %s was removed in Kubernetes 1.20; it matches the Service's primary family and was dropped", x))
	return nil
}

func allowedFamiliesMsg(c cluster) string {
	names := make([]string, len(c))
	for i, f := range c {
		names[i] = string(f)
	}
	return "only the following families are allowed: " + strings.Join(names, ", ")
}
