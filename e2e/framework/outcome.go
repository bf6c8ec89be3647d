package framework

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Outcome is what the API did with one Service write: the dual-stack fields
// it stored, or the error it answered. It is the unit of comparison of the
// differential test and the record of the grid truth files.
type Outcome struct {
	IPFamilyPolicy string   `json:"ipFamilyPolicy,omitempty"`
	IPFamilies     []string `json:"ipFamilies,omitempty"`
	// ClusterIPFamilies is the family of each clusterIP, or ["None"] for headless.
	ClusterIPFamilies []string  `json:"clusterIPFamilies,omitempty"`
	ClusterIPCount    int       `json:"clusterIPCount,omitempty"`
	Error             *APIError `json:"error,omitempty"`
}

// APIError is an apiserver (or webhook-relayed) error, reduced to what a
// client can see: the HTTP code, the reason, the message and the field causes.
type APIError struct {
	Code    int32   `json:"code"`
	Reason  string  `json:"reason,omitempty"`
	Message string  `json:"message"`
	Causes  []Cause `json:"causes,omitempty"`
}

// Cause is one field error: path, type (e.g. FieldValueInvalid) and message
// (e.g. `Invalid value: "IPv6": not configured on this cluster`).
type Cause struct {
	Field   string `json:"field,omitempty"`
	Type    string `json:"type,omitempty"`
	Message string `json:"message"`
}

// Text is the "field: message" line kube-apiserver prints for the cause.
func (c Cause) Text() string {
	if c.Field == "" {
		return c.Message
	}
	return c.Field + ": " + c.Message
}

// OutcomeOf reduces the answer of a Service create/update.
func OutcomeOf(svc *corev1.Service, err error) Outcome {
	if err != nil {
		return Outcome{Error: ErrorOf(err)}
	}
	o := Outcome{ClusterIPCount: len(svc.Spec.ClusterIPs)}
	if svc.Spec.IPFamilyPolicy != nil {
		o.IPFamilyPolicy = string(*svc.Spec.IPFamilyPolicy)
	}
	for _, f := range svc.Spec.IPFamilies {
		o.IPFamilies = append(o.IPFamilies, string(f))
	}
	for _, ip := range svc.Spec.ClusterIPs {
		o.ClusterIPFamilies = append(o.ClusterIPFamilies, FamilyOf(ip))
	}
	return o
}

// FamilyOf names the family of a clusterIP: IPv4, IPv6, None, or "invalid".
func FamilyOf(ip string) string {
	if ip == corev1.ClusterIPNone {
		return "None"
	}
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		return "invalid:" + ip
	case a.Is4():
		return string(corev1.IPv4Protocol)
	default:
		return string(corev1.IPv6Protocol)
	}
}

// ErrorOf reduces any client error; non-API errors keep their text with code 0.
func ErrorOf(err error) *APIError {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return &APIError{Message: err.Error()}
	}
	st := se.Status()
	e := &APIError{Code: st.Code, Reason: string(st.Reason), Message: st.Message}
	if st.Details != nil {
		for _, c := range st.Details.Causes {
			e.Causes = append(e.Causes, Cause{Field: c.Field, Type: string(c.Type), Message: c.Message})
		}
	}
	return e
}

// webhookPrefix is how the apiserver relays a webhook denial.
var webhookPrefix = regexp.MustCompile(`^admission webhook "[^"]*" denied the request: `)

// StripWebhookPrefix removes `admission webhook "name" denied the request: `.
func StripWebhookPrefix(msg string) (string, bool) {
	loc := webhookPrefix.FindStringIndex(msg)
	if loc == nil {
		return msg, false
	}
	return msg[loc[1]:], true
}

// Diff compares the apiserver's own outcome (plain) with the outcome of the
// same request through the webhook (hooked) and lists the differences; none
// means the webhook is indistinguishable from the apiserver for that request.
// Errors match when the HTTP codes are equal and every field cause of the
// apiserver's error appears, as "field: message", in the webhook's message
// (the apiserver relays a webhook denial as a message, without causes).
func Diff(plain, hooked Outcome) []string {
	var d []string
	switch {
	case plain.Error == nil && hooked.Error == nil:
		if plain.IPFamilyPolicy != hooked.IPFamilyPolicy {
			d = append(d, fmt.Sprintf("ipFamilyPolicy: apiserver %q, webhook %q", plain.IPFamilyPolicy, hooked.IPFamilyPolicy))
		}
		if !slices.Equal(plain.IPFamilies, hooked.IPFamilies) {
			d = append(d, fmt.Sprintf("ipFamilies: apiserver %v, webhook %v", plain.IPFamilies, hooked.IPFamilies))
		}
		if !slices.Equal(plain.ClusterIPFamilies, hooked.ClusterIPFamilies) {
			d = append(d, fmt.Sprintf("clusterIPs families: apiserver %v, webhook %v", plain.ClusterIPFamilies, hooked.ClusterIPFamilies))
		}
	case plain.Error != nil && hooked.Error == nil:
		d = append(d, fmt.Sprintf("apiserver rejected (%d %s) but the webhook path admitted it: policy=%s families=%v clusterIPs=%v",
			plain.Error.Code, plain.Error.Message, hooked.IPFamilyPolicy, hooked.IPFamilies, hooked.ClusterIPFamilies))
	case plain.Error == nil && hooked.Error != nil:
		d = append(d, fmt.Sprintf("apiserver admitted it (policy=%s families=%v clusterIPs=%v) but the webhook path rejected it: %d %s",
			plain.IPFamilyPolicy, plain.IPFamilies, plain.ClusterIPFamilies, hooked.Error.Code, hooked.Error.Message))
	default:
		if plain.Error.Code != hooked.Error.Code {
			d = append(d, fmt.Sprintf("HTTP code: apiserver %d, webhook path %d (%s)", plain.Error.Code, hooked.Error.Code, hooked.Error.Message))
		}
		msg, _ := StripWebhookPrefix(hooked.Error.Message)
		wants := CauseTexts(plain.Error)
		for _, w := range wants {
			if !strings.Contains(msg, w) {
				d = append(d, fmt.Sprintf("field error %q missing from the webhook path's answer %q", w, hooked.Error.Message))
			}
		}
	}
	return d
}

// CauseTexts lists "field: message" per cause, or the message when the error
// has no causes (e.g. an allocator error).
func CauseTexts(e *APIError) []string {
	if e == nil {
		return nil
	}
	if len(e.Causes) == 0 {
		return []string{e.Message}
	}
	out := make([]string, 0, len(e.Causes))
	for _, c := range e.Causes {
		out = append(out, c.Text())
	}
	return out
}

// ipLiteral matches quoted IPv4/IPv6 literals in field error values.
var ipLiteral = regexp.MustCompile(`"([0-9a-fA-F:.]*[.:][0-9a-fA-F:.]*)"`)

// MaskIPs replaces quoted addresses in an outcome's error texts by their
// family ("<IPv4>", "<IPv6>"), for comparing answers about Services whose
// addresses were allocated differently on each path.
func MaskIPs(o Outcome) Outcome {
	if o.Error == nil {
		return o
	}
	mask := func(s string) string {
		return ipLiteral.ReplaceAllStringFunc(s, func(m string) string {
			if a, err := netip.ParseAddr(strings.Trim(m, `"`)); err == nil {
				if a.Is4() {
					return `"<IPv4>"`
				}
				return `"<IPv6>"`
			}
			return m
		})
	}
	e := *o.Error
	e.Message = mask(e.Message)
	e.Causes = slices.Clone(e.Causes)
	for i := range e.Causes {
		e.Causes[i].Message = mask(e.Causes[i].Message)
	}
	o.Error = &e
	return o
}

// IPAt returns the address at offset from the start of prefix (offset 0 is
// the network address), or an error when the prefix is too small.
func IPAt(prefix netip.Prefix, offset uint64) (netip.Addr, error) {
	a := prefix.Masked().Addr()
	b := a.AsSlice()
	carry := offset
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		sum := uint64(b[i]) + carry&0xff
		b[i] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	out, _ := netip.AddrFromSlice(b)
	if carry > 0 || !prefix.Contains(out) {
		return netip.Addr{}, fmt.Errorf("offset %d outside %s", offset, prefix)
	}
	return out, nil
}
