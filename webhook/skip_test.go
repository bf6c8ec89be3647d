package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSkipLabelledServiceAddressesAreChecked: a Service carrying the skip
// label gets no defaulting and no pin, and /validate reserves nothing for
// it, but the addresses it asks for are checked like anyone's: one of a
// restricted pool that does not serve it, or one pending, bound or sticky
// for another Service, is denied with the usual message. A skip-labelled
// Service that asks for no address is allowed without touching the
// allocator (even while it could not be used), and a Namespace's skip label
// still leaves its Services alone entirely.
func TestSkipLabelledServiceAddressesAreChecked(t *testing.T) {
	payments := paymentsAt
	third := map[corev1.IPFamily]string{v4: "10.96.0.3", v6: "fd00:10:96::3"}
	const skip = `{"dualstack-webhook.io/skip":"true"}`
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			fams := c.families()
			doc := paymentsPools(fams, third, "  namespaces: [payments]\n")
			p := fams[0]
			e := newPinEnv(t, c, doc)
			ctx := context.Background()
			asking := func(name string, ips ...string) string {
				spec := selector
				if len(ips) > 0 {
					spec += fmt.Sprintf(`,"clusterIP":%q,"clusterIPs":["%s"]`, ips[0], strings.Join(ips, `","`))
				}
				if len(ips) == 2 {
					spec += `,"ipFamilyPolicy":"RequireDualStack"`
				}
				return svcWithLabels(name, skip, spec)
			}

			// Another Service holds lowest[p] (pinned, pending); a deleted
			// one of another namespace keeps second[p] (sticky).
			wantAllowed(t, e.mutate(reviewSpec{uid: "holder", object: svc("holder", selector)}))
			if _, err := e.store.Create(ctx, alloc.Reservation{IP: netip.MustParseAddr(second[p]), Pool: "general",
				Owner: alloc.Owner{Namespace: "other", Name: "gone"}, State: alloc.StateSticky,
				Created: time.Now(), Updated: time.Now(), Expires: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			before := len(e.reservations())

			audience := fmt.Sprintf(`spec.clusterIPs: Forbidden: IP %s belongs to pool "payments", which serves only namespaces [payments]; demo/web is not one of them`, payments[p])
			wantDenied(t, e.validate(reviewSpec{uid: "u1", object: asking("web", payments[p])}), audience)
			wantDenied(t, e.validate(reviewSpec{uid: "u2", object: asking("web", lowest[p])}), "IP "+lowest[p]+" is held by demo/holder (pending)")
			wantDenied(t, e.validate(reviewSpec{uid: "u3", object: asking("web", second[p])}), "IP "+second[p]+" is held by other/gone (sticky)")

			// A free address of an open pool: allowed, nothing reserved,
			// nothing patched (the apiserver allocates it; the reconciler
			// records it later).
			resp := e.validate(reviewSpec{uid: "u4", object: asking("web", third[p])})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 {
				t.Errorf("patched a skip-labelled Service: %s", resp.Patch)
			}
			// /mutate leaves it alone: no pin, no check, no reservation.
			resp = e.mutate(reviewSpec{uid: "u5", object: asking("web")})
			wantAllowed(t, resp)
			if len(resp.Patch) != 0 {
				t.Errorf("/mutate patched a skip-labelled Service: %s", resp.Patch)
			}
			if n := len(e.reservations()); n != before {
				t.Errorf("skip-labelled Services changed the reservations: %d, want %d", n, before)
			}
			// Its own sticky address back, after delete and re-create.
			wantAllowed(t, e.validate(reviewSpec{uid: "u6", namespace: "other",
				object: strings.Replace(asking("gone", second[p]), `"namespace":"demo"`, `"namespace":"other"`, 1)}))

			if len(fams) == 2 {
				// Dual-stack: a free primary does not carry a forbidden
				// secondary through.
				s := fams[1]
				wantDenied(t, e.validate(reviewSpec{uid: "u7", object: asking("web", third[p], payments[s])}),
					fmt.Sprintf("IP %s belongs to pool \"payments\"", payments[s]))
				wantAllowed(t, e.validate(reviewSpec{uid: "u8", object: asking("web", third[p], third[s])}))
			}

			// UPDATE: an address the Service already has is never
			// re-checked (access rules never evict); a new one is.
			old := asking("web", payments[p])
			wantAllowed(t, e.validate(reviewSpec{uid: "u9", op: "UPDATE", object: old, oldObject: old}))
			wantDenied(t, e.validate(reviewSpec{uid: "u10", op: "UPDATE", object: asking("web", lowest[p]), oldObject: asking("web")}),
				"held by demo/holder")
		})
	}
}

// TestSkipLabelledWithoutAddressStaysCheap: a skip-labelled Service that
// asks for no address is allowed on /validate without the allocator, even
// while the apiserver gate refuses everything that needs it; one that asks
// for an address is refused then (500, failurePolicy decides) rather than
// checked on caches that may be stale. A Namespace's skip label is still
// honoured before anything else.
func TestSkipLabelledWithoutAddressStaysCheap(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			pe := newPinEnv(t, c, "")
			p := pe.fams[0]
			down := errors.New("apiserver unreachable for 3s")
			e := newEnv(t, Options{Families: pe.fams, Allocator: pe.alloc, APIServer: func() error { return down },
				Namespaces: fakeNamespaces{"optout": {ObjectMeta: metav1.ObjectMeta{Name: "optout", Labels: map[string]string{"dualstack-webhook.io/skip": "true"}}}}})
			skipped := svcWithLabels("web", `{"dualstack-webhook.io/skip":"true"}`, selector)
			_, resp := e.review("/validate", reviewSpec{object: skipped}.JSON())
			wantAllowed(t, resp)
			asking := svcWithLabels("web", `{"dualstack-webhook.io/skip":"true"}`, selector+fmt.Sprintf(`,"clusterIP":%q`, lowest[p]))
			_, resp = e.review("/validate", reviewSpec{uid: "u2", object: asking}.JSON())
			if resp.Allowed || resp.Result == nil || resp.Result.Code != 500 || !strings.Contains(resp.Result.Message, "apiserver unreachable") {
				t.Errorf("skip-labelled Service asking for an address while the gate is shut: %+v, want a 500 answer", resp)
			}
			inOptOut := strings.Replace(asking, `"namespace":"demo"`, `"namespace":"optout"`, 1)
			_, resp = e.review("/validate", reviewSpec{uid: "u3", namespace: "optout", object: inOptOut}.JSON())
			wantAllowed(t, resp)
		})
	}
}
