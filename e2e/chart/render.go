// Package chart renders and installs the Helm chart (charts/dualstack-webhook)
// for the end-to-end suites, and turns its output into what a host-process
// run needs: the webhook's command-line arguments and its webhook
// configurations rewritten from `service:` to `url:`. Its tests install
// cert-manager's CRDs (from the cert-manager Go module's deploy/crds) into a
// real kube-apiserver and `helm install` the chart in every certs mode, so
// the API accepts every object the chart renders.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// KubeVersion is passed to `helm template` (helm v3 assumes 1.20 otherwise,
// which the chart's kubeVersion constraint refuses).
const KubeVersion = "1.37.2"

// Dir is the chart's directory in the repository.
func Dir() (string, error) {
	root, err := framework.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "dualstack-webhook"), nil
}

// Helm returns the helm binary installed next to the control-plane binaries.
func Helm() (string, error) { return framework.Binary("helm") }

// Template runs `helm template release <chart> -n namespace` with the given
// extra arguments (e.g. "-f", file, "--set", "k=v") and returns the manifest.
func Template(ctx context.Context, release, namespace string, args ...string) ([]byte, error) {
	h, err := Helm()
	if err != nil {
		return nil, err
	}
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	all := append([]string{"template", release, dir, "--namespace", namespace, "--kube-version", KubeVersion}, args...)
	cmd := exec.CommandContext(ctx, h, all...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template: %w: %s", err, stderr.String())
	}
	return out, nil
}

// Objects decodes the typed (built-in) objects of a manifest and returns the
// documents of other kinds (cert-manager, monitoring) as raw YAML.
func Objects(manifest []byte) (typed []runtime.Object, other [][]byte, err error) {
	for doc := range strings.SplitSeq(string(manifest), "\n---") {
		if isEmptyDoc(doc) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if runtime.IsNotRegisteredError(err) {
			other = append(other, []byte(doc))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("decoding %q: %w", firstLine(doc), err)
		}
		typed = append(typed, obj)
	}
	return typed, other, nil
}

func isEmptyDoc(doc string) bool {
	for l := range strings.SplitSeq(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

func firstLine(doc string) string {
	for l := range strings.SplitSeq(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			return t
		}
	}
	return ""
}

// ServeArgs returns the webhook container's arguments from a manifest
// ("serve", "--listen=:8443", ...), to run the binary as a host process with
// exactly what the chart would run it with (callers override --listen,
// --tls-* and --kubeconfig for loopback).
func ServeArgs(manifest []byte) ([]string, error) {
	typed, _, err := Objects(manifest)
	if err != nil {
		return nil, err
	}
	for _, o := range typed {
		if d, ok := o.(*appsv1.Deployment); ok {
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Name == "webhook" {
					return append([]string(nil), c.Args...), nil
				}
			}
		}
	}
	return nil, errors.New("no Deployment with a webhook container in the manifest")
}

// URLWebhooks returns the chart's webhook configurations with every
// clientConfig pointing at baseURL + the service path (the apiserver cannot
// reach Services without a cluster network) and carrying caBundle; the
// cert-manager injection annotation is dropped since nothing would honour
// it. Selectors, matchConditions, policies and timeouts stay as rendered, so
// a suite using them exercises the chart's own registration.
func URLWebhooks(manifest []byte, baseURL string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	typed, _, err := Objects(manifest)
	if err != nil {
		return nil, nil, err
	}
	toURL := func(cc *admissionregistrationv1.WebhookClientConfig) error {
		if cc.Service == nil {
			return errors.New("webhook without a service clientConfig")
		}
		path := "/"
		if cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		u := strings.TrimSuffix(baseURL, "/") + path
		*cc = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
		return nil
	}
	var m *admissionregistrationv1.MutatingWebhookConfiguration
	var v *admissionregistrationv1.ValidatingWebhookConfiguration
	for _, o := range typed {
		switch c := o.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			m = c.DeepCopy()
			delete(m.Annotations, "cert-manager.io/inject-ca-from")
			for i := range m.Webhooks {
				if err := toURL(&m.Webhooks[i].ClientConfig); err != nil {
					return nil, nil, err
				}
			}
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			v = c.DeepCopy()
			delete(v.Annotations, "cert-manager.io/inject-ca-from")
			for i := range v.Webhooks {
				if err := toURL(&v.Webhooks[i].ClientConfig); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	if m == nil {
		return nil, nil, errors.New("no MutatingWebhookConfiguration in the manifest")
	}
	return m, v, nil
}
