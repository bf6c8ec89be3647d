package policy

// This file mirrors, step by step, what kube-apiserver (≥ 1.23, checked
// against 1.37) does to a Service's dual-stack fields after admission:
// pkg/registry/core/service/storage/{storage.go,alloc.go} and the dual-stack
// parts of pkg/apis/core/validation. The webhook runs before all of this, so
// it can only give the same answer earlier; every function here is written so
// that running it on its own output changes nothing (re-invocation).

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

const none = corev1.ClusterIPNone

var (
	specPath       = field.NewPath("spec")
	clusterIPsPath = specPath.Child("clusterIPs")
	familiesPath   = specPath.Child("ipFamilies")
	policyPath     = specPath.Child("ipFamilyPolicy")

	// Sorted, because the apiserver renders sets.String.List().
	supportedPolicies = []string{
		string(corev1.IPFamilyPolicyPreferDualStack),
		string(corev1.IPFamilyPolicyRequireDualStack),
		string(corev1.IPFamilyPolicySingleStack),
	}
	supportedFamilies = []string{string(corev1.IPv4Protocol), string(corev1.IPv6Protocol)}
)

// cluster is the set of Service IP families the apiserver allocates from.
type cluster []corev1.IPFamily

func (c cluster) primary() corev1.IPFamily { return c[0] }
func (c cluster) dual() bool               { return len(c) == 2 }
func (c cluster) has(f corev1.IPFamily) bool {
	return slices.Contains(c, f)
}

func otherFamily(f corev1.IPFamily) corev1.IPFamily {
	if f == corev1.IPv4Protocol {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

// familyOf follows the apiserver's familyOf: anything that is not IPv4 is
// treated as IPv6 only when it parses as such.
func familyOf(ip string) corev1.IPFamily {
	if netutils.IsIPv4String(ip) {
		return corev1.IPv4Protocol
	}
	if netutils.IsIPv6String(ip) {
		return corev1.IPv6Protocol
	}
	return corev1.IPFamily("unknown")
}

func isExternalName(s *corev1.Service) bool { return s.Spec.Type == corev1.ServiceTypeExternalName }

// isHeadless is the validation package's definition (clusterIPs == ["None"]).
func isHeadless(s *corev1.Service) bool {
	return len(s.Spec.ClusterIPs) == 1 && s.Spec.ClusterIPs[0] == none
}

func policyOf(s *corev1.Service) corev1.IPFamilyPolicy {
	if s.Spec.IPFamilyPolicy == nil {
		return ""
	}
	return *s.Spec.IPFamilyPolicy
}

func ptrPolicy(p corev1.IPFamilyPolicy) *corev1.IPFamilyPolicy { return &p }

// normalizeClusterIPs is the registry's normalizeClusterIPs: keep the
// singular and plural fields in step for clients that only know one of them.
func normalizeClusterIPs(svc, old *corev1.Service) {
	if old == nil {
		if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
		return
	}
	if len(old.Spec.ClusterIPs) > 0 && len(svc.Spec.ClusterIPs) == 0 && old.Spec.ClusterIP == svc.Spec.ClusterIP {
		svc.Spec.ClusterIPs = slices.Clone(old.Spec.ClusterIPs)
	}
	if old.Spec.ClusterIP != svc.Spec.ClusterIP {
		if old.Spec.ClusterIP != "" && svc.Spec.ClusterIP == "" {
			if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
				svc.Spec.ClusterIPs = nil
			}
		} else if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
	}
}

// defaultOnRead rebuilds the 1.20+ view of a stored Service that predates
// (or never got) ipFamilies/ipFamilyPolicy, as the registry does before an
// update: the webhook receives the raw stored object.
func defaultOnRead(svc *corev1.Service, c cluster) {
	normalizeClusterIPs(svc, nil)
	if isExternalName(svc) || len(svc.Spec.IPFamilies) > 0 {
		return
	}
	if svc.Spec.ClusterIP == none {
		if len(svc.Spec.Selector) == 0 {
			svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicyRequireDualStack)
			svc.Spec.IPFamilies = []corev1.IPFamily{c.primary(), otherFamily(c.primary())}
		} else {
			svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicySingleStack)
			svc.Spec.IPFamilies = []corev1.IPFamily{c.primary()}
		}
		return
	}
	svc.Spec.IPFamilies = make([]corev1.IPFamily, len(svc.Spec.ClusterIPs))
	for i, ip := range svc.Spec.ClusterIPs {
		if netutils.IsIPv6String(ip) {
			svc.Spec.IPFamilies[i] = corev1.IPv6Protocol
		} else {
			svc.Spec.IPFamilies[i] = corev1.IPv4Protocol
		}
	}
	switch len(svc.Spec.IPFamilies) {
	case 1:
		svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicySingleStack)
	case 2:
		svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicyRequireDualStack)
	}
}

// patchAllocatedValues lets a client re-send its original YAML (no
// clusterIP) without tripping "may not change once set".
func patchAllocatedValues(svc, old *corev1.Service) {
	if isExternalName(old) || isExternalName(svc) {
		return
	}
	if svc.Spec.ClusterIP == "" {
		svc.Spec.ClusterIP = old.Spec.ClusterIP
	}
	if len(svc.Spec.ClusterIPs) == 0 && len(old.Spec.ClusterIPs) > 0 {
		svc.Spec.ClusterIPs = slices.Clone(old.Spec.ClusterIPs)
	}
}

// validateClusterIPsRelatedFields is the "loose" validation the registry runs
// before defaulting (validation.ValidateServiceClusterIPsRelatedFields).
func validateClusterIPsRelatedFields(svc, old *corev1.Service) field.ErrorList {
	if isExternalName(svc) {
		return nil
	}
	var errs field.ErrorList
	if svc.Spec.ClusterIP != "" {
		if len(svc.Spec.ClusterIPs) == 0 {
			errs = append(errs, field.Required(clusterIPsPath, ""))
		} else if svc.Spec.ClusterIPs[0] != svc.Spec.ClusterIP {
			errs = append(errs, field.Invalid(clusterIPsPath, svc.Spec.ClusterIPs, "first value must match `clusterIP`"))
		}
	} else if len(svc.Spec.ClusterIPs) != 0 {
		errs = append(errs, field.Invalid(clusterIPsPath, svc.Spec.ClusterIPs, "must be empty when `clusterIP` is not specified"))
	}

	seen := map[corev1.IPFamily]bool{}
	for i, f := range svc.Spec.IPFamilies {
		if !slices.Contains(supportedFamilies, string(f)) {
			errs = append(errs, field.NotSupported(familiesPath.Index(i), f, supportedFamilies))
		}
		if seen[f] {
			errs = append(errs, field.Duplicate(familiesPath.Index(i), f))
		}
		seen[f] = true
	}

	if svc.Spec.IPFamilyPolicy != nil && !slices.Contains(supportedPolicies, string(*svc.Spec.IPFamilyPolicy)) {
		errs = append(errs, field.NotSupported(policyPath, svc.Spec.IPFamilyPolicy, supportedPolicies))
	}

	var oldIPs []string
	if old != nil {
		oldIPs = old.Spec.ClusterIPs
	}
	invalidIPs := false
	for i, ip := range svc.Spec.ClusterIPs {
		if i == 0 && ip == none {
			if len(svc.Spec.ClusterIPs) > 1 {
				invalidIPs = true
				errs = append(errs, field.Invalid(clusterIPsPath, svc.Spec.ClusterIPs, "'None' must be the first and only value"))
			}
			continue
		}
		// StrictIPCIDRValidation is on by default since 1.36.
		ipErrs := validation.IsValidIPForLegacyField(clusterIPsPath.Index(i), ip, true, oldIPs)
		invalidIPs = invalidIPs || len(ipErrs) > 0
		errs = append(errs, ipErrs...)
	}
	if len(svc.Spec.ClusterIPs) > 2 {
		errs = append(errs, field.Invalid(clusterIPsPath, svc.Spec.ClusterIPs, "may only hold up to 2 values"))
	}
	// The apiserver stops here so that bad IPs do not produce confusing
	// family errors.
	if invalidIPs {
		return errs
	}
	if len(svc.Spec.ClusterIPs) > 1 {
		dual, err := netutils.IsDualStackIPStrings(svc.Spec.ClusterIPs)
		if err != nil {
			errs = append(errs, field.InternalError(clusterIPsPath, fmt.Errorf("failed to check for dual stack with error:%v", err)))
		}
		if !dual {
			errs = append(errs, field.Invalid(clusterIPsPath, svc.Spec.ClusterIPs, "may specify no more than one IP for each IP family"))
		}
	}
	if !isHeadless(svc) && len(svc.Spec.ClusterIPs) > 0 && len(svc.Spec.IPFamilies) > 0 {
		for i, ip := range svc.Spec.ClusterIPs {
			if i >= len(svc.Spec.IPFamilies) {
				break
			}
			if svc.Spec.IPFamilies[i] == corev1.IPv4Protocol && netutils.IsIPv6String(ip) {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv4 value as indicated by `ipFamilies[%v]`", i)))
			}
			if svc.Spec.IPFamilies[i] == corev1.IPv6Protocol && !netutils.IsIPv6String(ip) {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv6 value as indicated by `ipFamilies[%v]`", i)))
			}
		}
	}
	return errs
}

// isMatchingPreferDualStack is the registry's guard against silently
// upgrading or downgrading PreferDualStack Services when the cluster's
// dual-stackness changes: an update that keeps IPs and families as they are
// is left alone.
func isMatchingPreferDualStack(svc, old *corev1.Service) bool {
	if old == nil || svc.Spec.IPFamilyPolicy == nil || old.Spec.Type != svc.Spec.Type {
		return false
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		return false
	}
	if policyOf(svc) != corev1.IPFamilyPolicyPreferDualStack {
		return false
	}
	if old.Spec.IPFamilyPolicy != nil && policyOf(old) != corev1.IPFamilyPolicyPreferDualStack {
		return false
	}
	return slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) && slices.Equal(old.Spec.IPFamilies, svc.Spec.IPFamilies)
}

// initIPFamilyFields is alloc.go's initIPFamilyFields: default the policy,
// loosely validate, infer and check families. defaultPolicy is the policy a
// Service without one gets on CREATE (the apiserver's rule unless the webhook
// is configured otherwise). It mutates svc and returns the apiserver's errors.
func initIPFamilyFields(svc, old *corev1.Service, c cluster, defaultPolicy *corev1.IPFamilyPolicy) field.ErrorList {
	if isExternalName(svc) {
		return nil
	}
	if isMatchingPreferDualStack(svc, old) {
		return nil
	}

	if svc.Spec.IPFamilyPolicy == nil {
		switch {
		case old != nil && old.Spec.IPFamilyPolicy != nil:
			svc.Spec.IPFamilyPolicy = ptrPolicy(*old.Spec.IPFamilyPolicy)
		case svc.Spec.ClusterIP == none && len(svc.Spec.Selector) == 0:
			// Selectorless headless Services may front endpoints of
			// either family, so the apiserver assumes both.
			svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicyRequireDualStack)
		case defaultPolicy != nil:
			svc.Spec.IPFamilyPolicy = ptrPolicy(*defaultPolicy)
		default:
			svc.Spec.IPFamilyPolicy = ptrPolicy(corev1.IPFamilyPolicySingleStack)
		}
	}

	if errs := validateClusterIPsRelatedFields(svc, old); len(errs) > 0 {
		return errs
	}

	var errs field.ErrorList
	if old != nil {
		if policyOf(svc) == corev1.IPFamilyPolicySingleStack {
			// SingleStack with otherwise unchanged fields is a clear
			// request to downgrade; the primary is immutable, keep it.
			if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) && len(svc.Spec.ClusterIPs) > 1 {
				svc.Spec.ClusterIPs = svc.Spec.ClusterIPs[0:1]
			}
			if slices.Equal(old.Spec.IPFamilies, svc.Spec.IPFamilies) && len(svc.Spec.IPFamilies) > 1 {
				svc.Spec.IPFamilies = svc.Spec.IPFamilies[0:1]
			}
		} else {
			if len(svc.Spec.ClusterIPs) > 0 && len(svc.Spec.ClusterIPs) < len(old.Spec.ClusterIPs) {
				errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be 'SingleStack' to release the secondary cluster IP"))
			}
			if len(svc.Spec.IPFamilies) > 0 && len(svc.Spec.IPFamilies) < len(old.Spec.IPFamilies) {
				errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be 'SingleStack' to release the secondary IP family"))
			}
		}
	}

	if policyOf(svc) == corev1.IPFamilyPolicySingleStack {
		if len(svc.Spec.ClusterIPs) == 2 {
			errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
		}
		if len(svc.Spec.IPFamilies) == 2 {
			errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
		}
	}

	for i, ip := range svc.Spec.ClusterIPs {
		if ip == none {
			break
		}
		if i >= len(svc.Spec.IPFamilies) {
			fam := familyOf(ip)
			if !c.has(fam) {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), svc.Spec.ClusterIPs, fmt.Sprintf("%s is not configured on this cluster", fam)))
			} else {
				svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, fam)
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}

	if svc.Spec.ClusterIP == none && len(svc.Spec.Selector) == 0 {
		// Selectorless headless: no cluster checks at all, by design.
		if len(svc.Spec.IPFamilies) == 0 {
			svc.Spec.IPFamilies = []corev1.IPFamily{c.primary()}
		}
		if len(svc.Spec.IPFamilies) < 2 && policyOf(svc) != corev1.IPFamilyPolicySingleStack {
			svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, otherFamily(svc.Spec.IPFamilies[0]))
		}
		return nil
	}

	if policyOf(svc) == corev1.IPFamilyPolicyRequireDualStack && !c.dual() {
		errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "this cluster is not configured for dual-stack services"))
	}
	for i, f := range svc.Spec.IPFamilies {
		if !c.has(f) {
			errs = append(errs, field.Invalid(familiesPath.Index(i), f, "not configured on this cluster"))
		}
	}
	if len(errs) > 0 {
		return errs
	}

	if len(svc.Spec.IPFamilies) == 0 {
		svc.Spec.IPFamilies = []corev1.IPFamily{c.primary()}
	}
	if policyOf(svc) != corev1.IPFamilyPolicySingleStack && len(svc.Spec.IPFamilies) == 1 && c.dual() {
		svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, otherFamily(svc.Spec.IPFamilies[0]))
	}
	return nil
}

// allocation says which families still need an IP (the apiserver would pick
// them dynamically) and which IPs the update frees, mirroring
// allocClusterIPs and updateClusterIPs. It does not allocate.
func allocation(svc, old *corev1.Service) (allocate []corev1.IPFamily, release []string) {
	if isExternalName(svc) {
		if old != nil && !isExternalName(old) && !isHeadless(old) {
			release = slices.Clone(old.Spec.ClusterIPs)
		}
		return nil, release
	}
	if len(svc.Spec.ClusterIPs) > 0 && svc.Spec.ClusterIPs[0] == none {
		return nil, nil
	}
	if old == nil || isExternalName(old) {
		for i, f := range svc.Spec.IPFamilies {
			if i >= len(svc.Spec.ClusterIPs) || svc.Spec.ClusterIPs[i] == "" {
				allocate = append(allocate, f)
			}
		}
		return allocate, nil
	}
	if isMatchingPreferDualStack(svc, old) || isHeadless(old) {
		return nil, nil
	}
	switch {
	case len(old.Spec.IPFamilies) == 1 && len(svc.Spec.IPFamilies) == 2:
		if len(svc.Spec.ClusterIPs) < 2 {
			allocate = []corev1.IPFamily{svc.Spec.IPFamilies[1]}
		}
	case len(old.Spec.IPFamilies) == 2 && len(svc.Spec.IPFamilies) == 1 && len(old.Spec.ClusterIPs) > 1:
		release = []string{old.Spec.ClusterIPs[1]}
	}
	return allocate, release
}

// dropTypeDependentFields is the strategy's PrepareForUpdate clean-up when a
// Service becomes ExternalName: fields the client left untouched are wiped.
func dropTypeDependentFields(svc, old *corev1.Service) {
	if isExternalName(old) || !isExternalName(svc) {
		return
	}
	if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
		svc.Spec.ClusterIP = ""
		svc.Spec.ClusterIPs = nil
	}
	if slices.Equal(old.Spec.IPFamilies, svc.Spec.IPFamilies) {
		svc.Spec.IPFamilies = nil
	}
	if policyOf(old) == policyOf(svc) && (old.Spec.IPFamilyPolicy == nil) == (svc.Spec.IPFamilyPolicy == nil) {
		svc.Spec.IPFamilyPolicy = nil
	}
}

// validateService is the dual-stack subset of ValidateService, which runs
// after allocation. Other checks (ports, selector, ...) are the apiserver's
// business: the webhook does not reject what it does not model.
func validateService(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort:
		if isHeadless(svc) {
			errs = append(errs, field.Invalid(clusterIPsPath.Index(0), svc.Spec.ClusterIPs[0],
				fmt.Sprintf("may not be set to 'None' for %s services", svc.Spec.Type)))
		}
	case corev1.ServiceTypeExternalName:
		if len(svc.Spec.ClusterIPs) > 0 {
			errs = append(errs, field.Forbidden(clusterIPsPath, "may not be set for ExternalName services"))
		}
		if len(svc.Spec.IPFamilies) > 0 {
			errs = append(errs, field.Forbidden(familiesPath, "may not be set for ExternalName services"))
		}
		if svc.Spec.IPFamilyPolicy != nil {
			errs = append(errs, field.Forbidden(policyPath, "may not be set for ExternalName services"))
		}
	}
	return append(errs, validateClusterIPsRelatedFields(svc, old)...)
}

// validateUpdate is ValidateServiceUpdate's dual-stack part: primary IP and
// family immutable, secondary only added or released with the right policy.
func validateUpdate(svc, old *corev1.Service) field.ErrorList {
	errs := validateUpgradeDowngradeClusterIPs(svc, old)
	errs = append(errs, validateUpgradeDowngradeIPFamilies(svc, old)...)
	return append(errs, validateService(svc, old)...)
}

func validateUpgradeDowngradeClusterIPs(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	if isExternalName(svc) || isExternalName(old) || (isHeadless(svc) && isHeadless(old)) {
		return nil
	}
	newIPs, oldIPs := svc.Spec.ClusterIPs, old.Spec.ClusterIPs
	switch {
	case len(oldIPs) == len(newIPs):
		for i, ip := range oldIPs {
			if ip != newIPs[i] {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), newIPs, "may not change once set"))
			}
		}
	case len(oldIPs) > len(newIPs):
		if len(newIPs) == 0 {
			errs = append(errs, field.Invalid(clusterIPsPath.Index(0), newIPs, "primary clusterIP can not be unset"))
		}
		if len(oldIPs) > 0 && len(newIPs) > 0 && newIPs[0] != oldIPs[0] {
			errs = append(errs, field.Invalid(clusterIPsPath.Index(0), newIPs, "may not change once set"))
		}
		if len(newIPs) == 1 && policyOf(svc) != corev1.IPFamilyPolicySingleStack {
			errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be set to 'SingleStack' when releasing the secondary clusterIP"))
		}
	default:
		if len(oldIPs) > 0 && newIPs[0] != oldIPs[0] {
			errs = append(errs, field.Invalid(clusterIPsPath.Index(0), newIPs, "may not change once set"))
		}
	}
	return errs
}

func validateUpgradeDowngradeIPFamilies(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	if isExternalName(svc) || isExternalName(old) {
		return nil
	}
	// Headless Services may change families freely.
	if isHeadless(svc) != isHeadless(old) || isHeadless(svc) {
		return nil
	}
	newF, oldF := svc.Spec.IPFamilies, old.Spec.IPFamilies
	switch {
	case len(oldF) == len(newF):
		for i, f := range oldF {
			if f != newF[i] {
				// Upstream reports index 0 whatever i is.
				errs = append(errs, field.Invalid(familiesPath.Index(0), newF, "may not change once set"))
			}
		}
	case len(oldF) > len(newF):
		if len(svc.Spec.ClusterIPs) == 0 {
			errs = append(errs, field.Invalid(familiesPath.Index(0), newF, "primary ipFamily can not be unset"))
		}
		if len(newF) > 0 && newF[0] != oldF[0] {
			// Upstream quirk: the bad value shown is clusterIPs.
			errs = append(errs, field.Invalid(familiesPath.Index(0), svc.Spec.ClusterIPs, "may not change once set"))
		}
		if len(newF) == 1 && policyOf(svc) != corev1.IPFamilyPolicySingleStack {
			errs = append(errs, field.Invalid(policyPath, svc.Spec.IPFamilyPolicy, "must be set to 'SingleStack' when releasing the secondary ipFamily"))
		}
	default:
		if len(oldF) > 0 && len(newF) > 0 && newF[0] != oldF[0] {
			errs = append(errs, field.Invalid(familiesPath.Index(0), svc.Spec.ClusterIPs, "may not change once set"))
		}
	}
	return errs
}

// ipWarnings are the apiserver's warnings for non-canonical clusterIPs.
func ipWarnings(svc *corev1.Service) []string {
	var w []string
	for i, ip := range svc.Spec.ClusterIPs {
		if ip == none || ip == "" {
			continue
		}
		w = append(w, validation.GetWarningsForIP(clusterIPsPath.Index(i), ip)...)
	}
	return w
}
