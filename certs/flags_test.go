package certs

import (
	"slices"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes/fake"
)

func TestBootstrapFlags(t *testing.T) {
	tests := map[string]struct {
		args    []string
		enabled bool
		wantErr bool
		check   func(t *testing.T, c BootstrapConfig)
	}{
		"no flags: file mode": {args: nil, enabled: false},
		"the chart's arguments": {
			args: []string{
				"--tls-bootstrap-secret=dsw-dualstack-webhook-ca",
				"--tls-bootstrap-service=dsw-dualstack-webhook",
				"--tls-bootstrap-mutating-webhook-configuration=dsw-dualstack-webhook",
				"--tls-bootstrap-validating-webhook-configuration=dsw-dualstack-webhook",
				"--tls-bootstrap-ca-duration=8760h", "--tls-bootstrap-ca-renew-before=2880h",
				"--tls-bootstrap-cert-duration=24h", "--tls-bootstrap-cert-renew-before=8h",
			},
			enabled: true,
			check: func(t *testing.T, c BootstrapConfig) {
				if c.SecretName != "dsw-dualstack-webhook-ca" || c.Namespace != "ns" {
					t.Errorf("secret %s/%s", c.Namespace, c.SecretName)
				}
				if want := []string{"dsw-dualstack-webhook", "dsw-dualstack-webhook.ns", "dsw-dualstack-webhook.ns.svc"}; !slices.Equal(c.DNSNames, want) {
					t.Errorf("DNS names %v, want %v", c.DNSNames, want)
				}
				if !slices.Equal(c.MutatingWebhookConfigurations, []string{"dsw-dualstack-webhook"}) ||
					!slices.Equal(c.ValidatingWebhookConfigurations, []string{"dsw-dualstack-webhook"}) {
					t.Errorf("configurations %v %v", c.MutatingWebhookConfigurations, c.ValidatingWebhookConfigurations)
				}
				if c.CADuration != 365*24*time.Hour || c.CARenewBefore != 120*24*time.Hour || c.CertDuration != 24*time.Hour || c.CertRenewBefore != 8*time.Hour {
					t.Errorf("durations %v %v %v %v", c.CADuration, c.CARenewBefore, c.CertDuration, c.CertRenewBefore)
				}
			},
		},
		"defaults match the Default constants": {
			args:    []string{"--tls-bootstrap-secret=ca", "--tls-bootstrap-service=svc"},
			enabled: true,
			check: func(t *testing.T, c BootstrapConfig) {
				if c.CADuration != DefaultCADuration || c.CARenewBefore != DefaultCARenewBefore ||
					c.CertDuration != DefaultCertDuration || c.CertRenewBefore != DefaultCertRenewBefore {
					t.Errorf("defaults %+v", c)
				}
			},
		},
		"several configurations, comma-separated": {
			args:    []string{"--tls-bootstrap-secret=ca", "--tls-bootstrap-service=svc", "--tls-bootstrap-mutating-webhook-configuration=a,b"},
			enabled: true,
			check: func(t *testing.T, c BootstrapConfig) {
				if !slices.Equal(c.MutatingWebhookConfigurations, []string{"a", "b"}) {
					t.Errorf("got %v", c.MutatingWebhookConfigurations)
				}
			},
		},
		"a Secret without a Service": {args: []string{"--tls-bootstrap-secret=ca"}, enabled: true, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var f BootstrapFlags
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			f.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if f.Enabled() != tc.enabled {
				t.Fatalf("Enabled() = %v", f.Enabled())
			}
			if !tc.enabled {
				return
			}
			c, err := f.Config(fake.NewClientset(), "ns", nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Config() err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if _, err := NewBootstrap(c); err != nil {
				t.Fatalf("NewBootstrap refused the flags' config: %v", err)
			}
			tc.check(t, c)
		})
	}
}
