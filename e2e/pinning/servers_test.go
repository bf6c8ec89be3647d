package pinning

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// denyLabel on a Service makes the test's "later" validating webhook deny it.
const denyLabel = "e2e-later-deny"

// denyWebhook is a tiny HTTPS validating webhook that denies every Service
// labelled denyLabel=true: the "later webhook" whose verdict the pinning
// webhook cannot know when it reserves.
type denyWebhook struct {
	srv     *httptest.Server
	message string
	n       atomic.Int64
}

func (d *denyWebhook) calls() int64 { return d.n.Load() }

// startDenyWebhook serves and registers the deny webhook for namespaces
// labelled ScopeLabel=scope, waits until the apiserver calls it, and
// unregisters it when the test ends.
func startDenyWebhook(t *testing.T, c kubernetes.Interface, name, scope string) *denyWebhook {
	t.Helper()
	d := &denyWebhook{message: "denied by the e2e later webhook " + name}
	d.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		d.n.Add(1)
		review.Response = &admissionv1.AdmissionResponse{
			UID:     review.Request.UID,
			Allowed: false,
			Result:  &metav1.Status{Code: http.StatusForbidden, Message: d.message},
		}
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	}))
	t.Cleanup(d.srv.Close)

	url := d.srv.URL + "/deny"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-later-deny-" + name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "deny." + name + ".e2e.dualstack-webhook.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: framework.CertPEM(d.srv)},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{framework.ScopeLabel: scope}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{denyLabel: "true"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	ctx := context.Background()
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register the later webhook: %v", err)
	}
	t.Cleanup(func() {
		_ = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
	// Effective once a dry-run create of a labelled Service is denied by it.
	ns, err := framework.Namespace(ctx, c, "probe-deny", map[string]string{framework.ScopeLabel: scope}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Services(ns).Create(ctx, newService("probe", withLabel(denyLabel, "true")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		last = errText(err)
		return err != nil && strings.Contains(err.Error(), d.message), nil
	})
	if err != nil {
		t.Fatalf("later webhook not effective: %v (last answer: %s)", err, last)
	}
	return d
}

// isConflict reports an optimistic-concurrency Conflict.
func isConflict(err error) bool { return apierrors.IsConflict(err) }
