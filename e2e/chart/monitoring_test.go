package chart

import (
	"context"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestMonitoringObjects decodes the ServiceMonitor and PrometheusRule with
// the Prometheus Operator's own types, strictly (no Prometheus Operator CRDs
// are available to install here, so this is what catches a misspelt field),
// and checks that the ServiceMonitor selects the chart's Service and port and
// that each alert queries the metric names the chart documents.
func TestMonitoringObjects(t *testing.T) {
	if _, err := Helm(); err != nil {
		framework.NeedPrereq(t, err)
	}
	manifest, err := Template(context.Background(), "dsw", "dualstack-webhook",
		"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var sm *monitoringv1.ServiceMonitor
	var pr *monitoringv1.PrometheusRule
	for _, doc := range other {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ServiceMonitor":
			sm = &monitoringv1.ServiceMonitor{}
			if err := yaml.UnmarshalStrict(doc, sm); err != nil {
				t.Fatalf("ServiceMonitor: %v", err)
			}
		case "PrometheusRule":
			pr = &monitoringv1.PrometheusRule{}
			if err := yaml.UnmarshalStrict(doc, pr); err != nil {
				t.Fatalf("PrometheusRule: %v", err)
			}
		}
	}
	if sm == nil || pr == nil {
		t.Fatal("ServiceMonitor or PrometheusRule not rendered")
	}
	typed, _, _ := Objects(manifest)
	var svcLabels map[string]string
	var svcPorts []string
	for _, o := range typed {
		if svc, ok := o.(*corev1.Service); ok {
			svcLabels = svc.Labels
			for _, p := range svc.Spec.Ports {
				svcPorts = append(svcPorts, p.Name)
			}
		}
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svcLabels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, the Service has %q", k, v, svcLabels[k])
		}
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || !slices.Contains(svcPorts, "metrics") {
		t.Errorf("ServiceMonitor endpoints %+v, Service ports %v", sm.Spec.Endpoints, svcPorts)
	}

	want := map[string]string{
		"DualStackWebhookPoolNearlyFull":      "dualstack_webhook_pool_addresses",
		"DualStackWebhookAdmissionSlow":       "dualstack_webhook_http_request_duration_seconds_bucket",
		"DualStackWebhookCertificateExpiring": "dualstack_webhook_certificate_expiration_timestamp_seconds",
		"DualStackWebhookReconcilerFailing":   "dualstack_webhook_reconcile_errors_total",
		"DualStackWebhookPoolsNotApplied":     "dualstack_webhook_pools_stale",
		"DualStackWebhookDown":                "up{",
	}
	seen := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			expr := r.Expr.String()
			seen[r.Alert] = true
			if m, ok := want[r.Alert]; ok && !strings.Contains(expr, m) {
				t.Errorf("%s: expr %q does not query %s", r.Alert, expr, m)
			}
			if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
				t.Errorf("%s: unbalanced expression %q", r.Alert, expr)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: no severity or summary", r.Alert)
			}
		}
	}
	for a := range want {
		if !seen[a] {
			t.Errorf("alert %s missing", a)
		}
	}
}
