package certs

import (
	"errors"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
)

// BootstrapFlags are the `serve` flags of self-bootstrap mode, exactly as the
// Helm chart renders them (charts/dualstack-webhook, certs.mode=selfBootstrap).
// They live here, next to BootstrapConfig, so that the chart's tests parse the
// chart's arguments with the very definitions the binary uses.
type BootstrapFlags struct {
	// Secret enables self-bootstrap mode: the CA Secret's name.
	Secret string
	// Service is the webhook's Service name (certificate DNS names).
	Service string
	// MutatingWebhookConfigurations and ValidatingWebhookConfigurations get
	// the CA bundle.
	MutatingWebhookConfigurations, ValidatingWebhookConfigurations []string
	// Durations, see BootstrapConfig.
	CADuration, CARenewBefore, CertDuration, CertRenewBefore time.Duration
}

// AddFlags registers the --tls-bootstrap-* flags on fs.
func (f *BootstrapFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.Secret, "tls-bootstrap-secret", "", "self-bootstrap TLS: name of the Secret (in --namespace) holding the webhook's own CA; replaces --tls-cert-file/--tls-key-file")
	fs.StringVar(&f.Service, "tls-bootstrap-service", "", "self-bootstrap TLS: the webhook's Service name; the certificate is for <svc>, <svc>.<ns>, <svc>.<ns>.svc")
	fs.StringSliceVar(&f.MutatingWebhookConfigurations, "tls-bootstrap-mutating-webhook-configuration", nil, "self-bootstrap TLS: MutatingWebhookConfiguration(s) whose caBundle the webhook writes")
	fs.StringSliceVar(&f.ValidatingWebhookConfigurations, "tls-bootstrap-validating-webhook-configuration", nil, "self-bootstrap TLS: ValidatingWebhookConfiguration(s) whose caBundle the webhook writes")
	fs.DurationVar(&f.CADuration, "tls-bootstrap-ca-duration", DefaultCADuration, "self-bootstrap TLS: CA lifetime")
	fs.DurationVar(&f.CARenewBefore, "tls-bootstrap-ca-renew-before", DefaultCARenewBefore, "self-bootstrap TLS: introduce a new CA this long before the current one expires")
	fs.DurationVar(&f.CertDuration, "tls-bootstrap-cert-duration", DefaultCertDuration, "self-bootstrap TLS: serving certificate lifetime")
	fs.DurationVar(&f.CertRenewBefore, "tls-bootstrap-cert-renew-before", DefaultCertRenewBefore, "self-bootstrap TLS: renew the serving certificate this long before it expires")
}

// Enabled tells whether self-bootstrap mode was asked for.
func (f *BootstrapFlags) Enabled() bool { return f.Secret != "" }

// Config turns the flags into a BootstrapConfig for namespace (the serve
// --namespace). NewBootstrap validates the rest.
func (f *BootstrapFlags) Config(client kubernetes.Interface, namespace string, log *zap.Logger) (BootstrapConfig, error) {
	if f.Service == "" {
		return BootstrapConfig{}, errors.New("--tls-bootstrap-service is required with --tls-bootstrap-secret")
	}
	return BootstrapConfig{
		Client:                          client,
		Namespace:                       namespace,
		SecretName:                      f.Secret,
		DNSNames:                        ServiceDNSNames(f.Service, namespace),
		MutatingWebhookConfigurations:   f.MutatingWebhookConfigurations,
		ValidatingWebhookConfigurations: f.ValidatingWebhookConfigurations,
		CADuration:                      f.CADuration,
		CARenewBefore:                   f.CARenewBefore,
		CertDuration:                    f.CertDuration,
		CertRenewBefore:                 f.CertRenewBefore,
		Log:                             log,
	}, nil
}
