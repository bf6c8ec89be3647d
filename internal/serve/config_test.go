package serve

import (
	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

func TestParseServiceCIDRs(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    []corev1.IPFamily
		wantErr string
	}{
		"IPv4 only":                        {in: "10.96.0.0/12", want: []corev1.IPFamily{"IPv4"}},
		"IPv6 only":                        {in: "fd00:10:96::/108", want: []corev1.IPFamily{"IPv6"}},
		"dual, IPv4 primary":               {in: "10.96.0.0/16,fd00:10:96::/108", want: []corev1.IPFamily{"IPv4", "IPv6"}},
		"dual, IPv6 primary, with spaces":  {in: "fd00:10:96::/108, 10.96.0.0/16", want: []corev1.IPFamily{"IPv6", "IPv4"}},
		"two IPv4 CIDRs are refused":       {in: "10.96.0.0/16,10.97.0.0/16", wantErr: "one IPv4 and one IPv6"},
		"three CIDRs are refused":          {in: "10.96.0.0/16,fd00::/108,10.1.0.0/16", wantErr: "at most two"},
		"a host address is refused":        {in: "10.96.0.1/16", wantErr: "did you mean 10.96.0.0/16"},
		"garbage is refused":               {in: "ten.ninety-six", wantErr: "is not a CIDR"},
		"an empty element is refused":      {in: "10.96.0.0/16,", wantErr: "is not a CIDR"},
		"an IPv4-mapped prefix is refused": {in: "::ffff:10.96.0.0/112", wantErr: "IPv4-mapped"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseServiceCIDRs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := Config{ServiceCIDRs: got}
			if f := c.Families(); !equalFamilies(f, tc.want) {
				t.Errorf("families = %v, want %v", f, tc.want)
			}
		})
	}
}

func equalFamilies(a, b []corev1.IPFamily) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseConfig(t *testing.T) {
	dev := []string{"--dev"}
	tests := map[string]struct {
		args    []string
		env     map[string]string
		check   func(*testing.T, *Config)
		wantErr string
	}{
		"--dev alone has the documented defaults": {args: dev, check: func(t *testing.T, c *Config) {
			if c.Listen != ":8443" || c.MetricsListen != ":8080" {
				t.Errorf("listen %q metrics %q", c.Listen, c.MetricsListen)
			}
			want := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
			if len(c.ServiceCIDRs) != 2 || c.ServiceCIDRs[0] != want[0] || c.ServiceCIDRs[1] != want[1] {
				t.Errorf("service CIDRs %v", c.ServiceCIDRs)
			}
			if c.LogFormat != "console" || c.ShutdownDelay != 0 || c.DefaultPolicy != nil {
				t.Errorf("format %q delay %v policy %v", c.LogFormat, c.ShutdownDelay, c.DefaultPolicy)
			}
		}},
		"--dev with --service-cidrs uses them": {args: []string{"--dev", "--service-cidrs", "fd00::/108"}, check: func(t *testing.T, c *Config) {
			if len(c.ServiceCIDRs) != 1 || !c.ServiceCIDRs[0].Addr().Is6() {
				t.Errorf("service CIDRs %v", c.ServiceCIDRs)
			}
		}},
		"cluster mode without --service-cidrs discovers them": {
			args: []string{"--tls-cert-file", "c", "--tls-key-file", "k"},
			check: func(t *testing.T, c *Config) {
				if c.ServiceCIDRs != nil || c.LogFormat != "json" || c.ShutdownDelay != 5*time.Second || c.Namespace != "dualstack-webhook" {
					t.Errorf("%+v", c)
				}
			}},
		"cluster mode needs a certificate": {args: nil, wantErr: "a serving certificate is required"},
		"self-bootstrap mode parses the chart's flags": {args: []string{"--tls-bootstrap-secret=dsw-ca", "--tls-bootstrap-service=dsw",
			"--tls-bootstrap-mutating-webhook-configuration=dsw", "--tls-bootstrap-cert-duration=24h", "--namespace=ops"},
			check: func(t *testing.T, c *Config) {
				if !c.Bootstrap.Enabled() || c.Bootstrap.Service != "dsw" || c.Bootstrap.CertDuration != 24*time.Hour || c.Namespace != "ops" {
					t.Errorf("%+v", c.Bootstrap)
				}
			}},
		"files and self-bootstrap exclude each other": {args: []string{"--tls-cert-file=c", "--tls-key-file=k", "--tls-bootstrap-secret=s"}, wantErr: "exclude each other"},
		"self-bootstrap needs a cluster":              {args: []string{"--dev", "--tls-bootstrap-secret=s"}, wantErr: "needs a cluster"},
		"a certificate without key is refused":        {args: []string{"--dev", "--tls-cert-file", "c"}, wantErr: "go together"},
		"a valid default policy is kept": {args: []string{"--dev", "--default-ip-family-policy", "PreferDualStack"}, check: func(t *testing.T, c *Config) {
			if c.DefaultPolicy == nil || *c.DefaultPolicy != corev1.IPFamilyPolicyPreferDualStack {
				t.Errorf("policy %v", c.DefaultPolicy)
			}
		}},
		"an invalid default policy is refused": {args: []string{"--dev", "--default-ip-family-policy", "DualStack"}, wantErr: `"DualStack" is not SingleStack`},
		"bad CIDRs are refused":                {args: []string{"--dev", "--service-cidrs", "10.0.0.0/8,10.1.0.0/16"}, wantErr: "--service-cidrs"},
		"a bad log level is refused":           {args: []string{"--dev", "--log-level", "loud"}, wantErr: "--log-level"},
		"stray arguments are refused":          {args: []string{"--dev", "extra"}, wantErr: "unexpected arguments"},
		"unknown flags are refused":            {args: []string{"--dev", "--nope"}, wantErr: "unknown flag"},
		"environment fills unset flags": {args: dev, env: map[string]string{
			"DUALSTACK_WEBHOOK_LISTEN": "127.0.0.1:9443", "DUALSTACK_WEBHOOK_DEFAULT_IP_FAMILY_POLICY": "RequireDualStack", "POD_NAMESPACE": "ops",
		}, check: func(t *testing.T, c *Config) {
			if c.Listen != "127.0.0.1:9443" || c.DefaultPolicy == nil || *c.DefaultPolicy != "RequireDualStack" || c.Namespace != "ops" {
				t.Errorf("%+v", c)
			}
		}},
		"a flag wins over the environment": {args: []string{"--dev", "--listen", ":1"}, env: map[string]string{"DUALSTACK_WEBHOOK_LISTEN": ":2"},
			check: func(t *testing.T, c *Config) {
				if c.Listen != ":1" {
					t.Errorf("listen %q", c.Listen)
				}
			}},
		"a bad environment value is an error": {args: dev, env: map[string]string{"DUALSTACK_WEBHOOK_SHUTDOWN_DELAY": "soon"}, wantErr: "DUALSTACK_WEBHOOK_SHUTDOWN_DELAY"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ParseConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestPinningFlags(t *testing.T) {
	noenv := func(string) string { return "" }
	tls := []string{"--tls-cert-file", "c", "--tls-key-file", "k"}
	c, err := ParseConfig(tls, noenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Pinning || c.PoolsConfigMap != "dualstack-webhook-pools" || c.PoolsFile != "" || c.PendingGrace != 2*time.Minute ||
		c.Retention != 24*time.Hour || c.ReconcileInterval != 30*time.Second || !c.LeaderElection {
		t.Errorf("defaults: %+v", c)
	}
	env := map[string]string{"DUALSTACK_WEBHOOK_PENDING_GRACE": "5s", "DUALSTACK_WEBHOOK_POOLS_CONFIGMAP": "mine"}
	c, err = ParseConfig(append(tls, "--retention=0", "--reconcile-interval=1s", "--leader-election=false", "--pinning=false"),
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pinning || c.PoolsConfigMap != "mine" || c.PendingGrace != 5*time.Second || c.Retention != 0 || c.ReconcileInterval != time.Second || c.LeaderElection {
		t.Errorf("set: %+v", c)
	}
	if o := allocOptions(c, zapNop()); o.Retention >= 0 {
		t.Errorf("--retention=0 gives alloc Retention %v, want negative (free at once; alloc reads 0 as the default)", o.Retention)
	}
	c, err = ParseConfig([]string{"--dev", "--pools-file", "p.yaml"}, noenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.LeaderElection || c.PoolsFile != "p.yaml" {
		t.Errorf("--dev: leader election %v, pools file %q", c.LeaderElection, c.PoolsFile)
	}
	if c.Profiling {
		t.Errorf("--profiling is on by default")
	}
	if c.LowestSpread != alloc.DefaultSpread {
		t.Errorf("--lowest-spread defaults to %d, want %d", c.LowestSpread, alloc.DefaultSpread)
	}
	c, err = ParseConfig(append(tls, "--lowest-spread=1"), noenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o := allocOptions(c, zapNop()); o.Spread != 1 {
		t.Errorf("--lowest-spread=1 gives alloc Spread %d", o.Spread)
	}
	if c.Events != EventsAll {
		t.Errorf("--events defaults to %q, want %q", c.Events, EventsAll)
	}
	if c, err = ParseConfig(append(tls, "--events=warnings"), noenv, io.Discard); err != nil || c.Events != EventsWarnings {
		t.Errorf("--events=warnings: %q, %v", c.Events, err)
	}
	for _, bad := range [][]string{{"--pending-grace=0"}, {"--retention=-1s"}, {"--reconcile-interval=0"}, {"--profiling", "--metrics-listen="}, {"--lowest-spread=0"}, {"--events=normal"}, {"--events="}} {
		if _, err := ParseConfig(append(tls, bad...), noenv, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }
