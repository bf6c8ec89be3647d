package chart

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestRenderHelpers needs only helm: ServeArgs and URLWebhooks on the
// chart's default rendering.
func TestRenderHelpers(t *testing.T) {
	if _, err := Helm(); err != nil {
		framework.NeedPrereq(t, err)
	}
	manifest, err := Template(context.Background(), "dsw", "dualstack-webhook")
	if err != nil {
		t.Fatal(err)
	}
	args, err := ServeArgs(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serve", "--listen=:8443", "--metrics-listen=:8080", "--tls-cert-file=/certs/tls.crt", "--tls-key-file=/certs/tls.key", "--namespace=dualstack-webhook"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}

	m, v, err := URLWebhooks(manifest, "https://127.0.0.1:9443/", []byte("CA"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Annotations["cert-manager.io/inject-ca-from"]; ok {
		t.Error("inject-ca-from kept")
	}
	paths := map[string]string{}
	for _, w := range m.Webhooks {
		if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil || string(w.ClientConfig.CABundle) != "CA" {
			t.Fatalf("%s: clientConfig %+v", w.Name, w.ClientConfig)
		}
		paths[w.Name] = *w.ClientConfig.URL
		if w.NamespaceSelector == nil || len(w.MatchConditions) == 0 || w.FailurePolicy == nil {
			t.Errorf("%s: selectors, conditions or policy lost", w.Name)
		}
	}
	for _, w := range v.Webhooks {
		if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil {
			t.Fatalf("%s: clientConfig %+v", w.Name, w.ClientConfig)
		}
		paths[w.Name] = *w.ClientConfig.URL
	}
	want := map[string]string{
		"defaulting.dualstack-webhook.io": "https://127.0.0.1:9443/default",
		"pinning.dualstack-webhook.io":    "https://127.0.0.1:9443/mutate",
		"validating.dualstack-webhook.io": "https://127.0.0.1:9443/validate",
		"pools.dualstack-webhook.io":      "https://127.0.0.1:9443/validate",
	}
	for name, url := range want {
		if paths[name] != url {
			t.Errorf("%s: url %q, want %q", name, paths[name], url)
		}
	}
	if _, _, err := URLWebhooks([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), "https://x", nil); err == nil || !strings.Contains(err.Error(), "no MutatingWebhookConfiguration") {
		t.Errorf("manifest without webhooks: err = %v", err)
	}
}
