package serve

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/certs"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
)

// DevServiceCIDRs are the service CIDRs of `serve --dev` without
// --service-cidrs (a documented CLI contract, README "Flags"): kind's and kubeadm's defaults.
const DevServiceCIDRs = "10.96.0.0/16,fd00:10:96::/108"

// LeaseName is the coordination.k8s.io Lease (in --namespace) that elects
// the one active reconciler.
const LeaseName = "dualstack-webhook-reconciler"

// envPrefix: every flag can also be set as DUALSTACK_WEBHOOK_<FLAG>, e.g.
// DUALSTACK_WEBHOOK_SERVICE_CIDRS; a flag on the command line wins.
const envPrefix = "DUALSTACK_WEBHOOK_"

// Config is everything `serve` needs, parsed and validated.
type Config struct {
	// Listen is the TLS webhook address (--listen).
	Listen string
	// MetricsListen is the plain-HTTP /metrics address (--metrics-listen);
	// empty disables it.
	MetricsListen string
	// Profiling serves Go's /debug/pprof on the metrics listener
	// (--profiling), for finding where CPU and memory go at scale.
	Profiling bool
	// TLSCertFile and TLSKeyFile are the serving pair, reloaded on change.
	TLSCertFile, TLSKeyFile string
	// Bootstrap is self-bootstrap TLS (--tls-bootstrap-*): the webhook keeps
	// its own CA in a Secret and writes the caBundle itself.
	Bootstrap certs.BootstrapFlags
	// ServiceCIDRs are the cluster's service CIDRs, primary first; empty
	// means "discover from the cluster's ServiceCIDR objects".
	ServiceCIDRs []netip.Prefix
	// Kubeconfig is the kubeconfig path; empty means in-cluster or the
	// usual KUBECONFIG/~/.kube/config lookup.
	Kubeconfig string
	// Namespace is where the webhook keeps its state ConfigMaps.
	Namespace string
	// DefaultPolicy is --default-ip-family-policy; nil = apiserver default.
	DefaultPolicy *corev1.IPFamilyPolicy
	// Dev runs without a cluster, with a self-signed certificate.
	Dev bool
	// DevCAFile is where --dev writes its CA certificate.
	DevCAFile string
	// LogLevel and LogFormat ("json" or "console") shape the logs.
	LogLevel  zapcore.Level
	LogFormat string
	// ShutdownDelay keeps serving (readiness failing, every answer closing its connection)
	// after SIGTERM so the pod leaves the endpoints first.
	ShutdownDelay time.Duration

	// Pinning turns clusterIP pinning on (--pinning); false is defaulting
	// only, the behaviour before pinning existed.
	Pinning bool
	// PoolsConfigMap names the pools ConfigMap (key pools.yaml) in
	// Namespace; absent means the static band of each ServiceCIDR.
	PoolsConfigMap string
	// PoolsFile is a pools.yaml file used instead of the ConfigMap (for
	// --dev, or a cluster without the ConfigMap).
	PoolsFile string
	// PendingGrace is how long a reservation made at admission waits for
	// its Service before the reconciler frees it.
	PendingGrace time.Duration
	// Retention keeps a deleted Service's addresses for its namespace/name.
	Retention time.Duration
	// ReconcileInterval is the period of the reconciler's full resync
	// (besides the informer events that trigger one).
	ReconcileInterval time.Duration
	// LeaderElection runs the reconciler only in the replica holding the
	// Lease; every replica serves admission either way.
	LeaderElection bool

	// TestClockOffset moves this process's clock (allocator and
	// reconciler) by a fixed amount: a hidden test hook with which the
	// fault suite makes one replica's clock jump. Not for production.
	TestClockOffset time.Duration
	// LowestSpread is alloc.Options.Spread (--lowest-spread): how far a
	// replica that lost a race spreads its "lowest" picks.
	LowestSpread int
	// Events (--events) is which of the reconciler's Events are written:
	// EventsAll, or EventsWarnings (no Normal Event per pin, import or
	// release: on a busy cluster that is one more write per Service create
	// for the apiserver and etcd, and a share of the leader's CPU).
	Events string
}

// The values of --events.
const (
	EventsAll      = "all"
	EventsWarnings = "warnings"
)

// Families returns the IP families of ServiceCIDRs in order.
func (c *Config) Families() []corev1.IPFamily {
	fams := make([]corev1.IPFamily, 0, len(c.ServiceCIDRs))
	for _, p := range c.ServiceCIDRs {
		fams = append(fams, familyOf(p.Addr()))
	}
	return fams
}

func familyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// ParseConfig reads flags (and DUALSTACK_WEBHOOK_* environment variables)
// into a validated Config. getenv is os.Getenv outside tests.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	fs := pflag.NewFlagSet("dualstack-webhook serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		c             Config
		cidrs         string
		defaultPolicy string
		logLevel      string
	)
	fs.StringVar(&c.Listen, "listen", ":8443", "TLS address of the webhook (POST /mutate, /validate; GET /healthz, /readyz)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", ":8080", "plain-HTTP address of GET /metrics (empty: off)")
	fs.BoolVar(&c.Profiling, "profiling", false, "serve Go's /debug/pprof/ on --metrics-listen (CPU, heap, goroutine profiles)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM serving certificate (reloaded when it changes)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	c.Bootstrap.AddFlags(fs)
	fs.StringVar(&cidrs, "service-cidrs", "", "service CIDRs, primary first, e.g. "+DevServiceCIDRs+" (default: discovered from the cluster's ServiceCIDR objects; with --dev: "+DevServiceCIDRs+")")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&c.Namespace, "namespace", "", "namespace of the webhook's state ConfigMaps (default: $POD_NAMESPACE, else dualstack-webhook)")
	fs.StringVar(&defaultPolicy, "default-ip-family-policy", "", "ipFamilyPolicy for new Services that set none: SingleStack, PreferDualStack or RequireDualStack (default: the apiserver's)")
	fs.BoolVar(&c.Dev, "dev", false, "run without a cluster: self-signed TLS for localhost/127.0.0.1/::1, in-memory state, console logs")
	fs.StringVar(&c.DevCAFile, "dev-ca-file", filepath.Join(os.TempDir(), "dualstack-webhook-dev-ca.pem"), "with --dev: where to write the CA certificate for curl --cacert")
	fs.StringVar(&logLevel, "log-level", "info", "debug (adds request/response bodies), info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "", "json or console (default: console with --dev, else json)")
	fs.BoolVar(&c.Pinning, "pinning", true, "pin clusterIPs from the pools at admission and reconcile them (false: defaulting only)")
	fs.StringVar(&c.PoolsConfigMap, "pools-configmap", "dualstack-webhook-pools", "ConfigMap (in --namespace, key pools.yaml) holding the pools; absent: the last pools applied from it (recorded in <name>-applied), or without a record the KEP-3070 static band of each ServiceCIDR")
	fs.StringVar(&c.PoolsFile, "pools-file", "", "pools.yaml file to use instead of --pools-configmap (for --dev)")
	fs.DurationVar(&c.PendingGrace, "pending-grace", 2*time.Minute, "free a reservation made at admission when its Service has not appeared after this long")
	fs.DurationVar(&c.Retention, "retention", alloc.DefaultRetention, "keep a deleted Service's addresses for its namespace/name this long (delete + re-create gets them back)")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", 30*time.Second, "period of the reconciler's full resync (a Service event syncs that Service alone)")
	fs.BoolVar(&c.LeaderElection, "leader-election", true, "run the reconciler only in the replica holding the Lease "+LeaseName+" in --namespace (every replica serves admission)")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 5*time.Second, "on SIGTERM, keep serving this long with readiness failing and every answer closing its connection before closing the listener (default 0 with --dev)")
	fs.DurationVar(&c.TestClockOffset, "test-clock-offset", 0, "test hook: move this process's clock by this much")
	_ = fs.MarkHidden("test-clock-offset")
	fs.StringVar(&c.Events, "events", EventsAll, "which Events the reconciler writes: all, or warnings (no Normal ClusterIPPinned/ReservationImported/ReservationReleased Event per Service, one write fewer per Service create on a busy cluster; the reservations, the log and the metrics still show them)")
	fs.IntVar(&c.LowestSpread, "lowest-spread", alloc.DefaultSpread, "strategy lowest with several replicas: a replica that lost a race for an address to another takes one of the lowest N free addresses (a random rank, drawn again at each lost race) for the next 10 minutes; 1: always exactly the lowest free (replicas then race for it)")
	fs.SortFlags = false

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	// Environment fills what the command line did not set.
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && !f.Changed {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	var errs []error
	if cidrs == "" && c.Dev {
		cidrs = DevServiceCIDRs
	}
	if cidrs != "" {
		p, err := ParseServiceCIDRs(cidrs)
		if err != nil {
			errs = append(errs, fmt.Errorf("--service-cidrs: %w", err))
		}
		c.ServiceCIDRs = p
	}
	if defaultPolicy != "" {
		p := corev1.IPFamilyPolicy(defaultPolicy)
		switch p {
		case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack:
			c.DefaultPolicy = &p
		default:
			errs = append(errs, fmt.Errorf("--default-ip-family-policy: %q is not SingleStack, PreferDualStack or RequireDualStack", defaultPolicy))
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if c.TLSCertFile != "" && c.Bootstrap.Enabled() {
		errs = append(errs, errors.New("--tls-cert-file and --tls-bootstrap-secret exclude each other"))
	}
	if c.Dev && c.Bootstrap.Enabled() {
		errs = append(errs, errors.New("--tls-bootstrap-secret needs a cluster; --dev has none"))
	}
	if !c.Dev && c.TLSCertFile == "" && !c.Bootstrap.Enabled() {
		errs = append(errs, errors.New("a serving certificate is required: --tls-cert-file/--tls-key-file (cert-manager), --tls-bootstrap-secret (self-bootstrap), or --dev"))
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	switch c.LogFormat {
	case "":
		c.LogFormat = "json"
		if c.Dev {
			c.LogFormat = "console"
		}
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("--log-format: %q is not json or console", c.LogFormat))
	}
	if c.Dev && !fs.Changed("shutdown-delay") && getenv(envPrefix+"SHUTDOWN_DELAY") == "" {
		c.ShutdownDelay = 0 // Ctrl-C on a laptop should stop at once
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, errors.New("--shutdown-delay must not be negative"))
	}
	if c.PendingGrace <= 0 {
		errs = append(errs, errors.New("--pending-grace must be positive"))
	}
	if c.Retention < 0 {
		errs = append(errs, errors.New("--retention must not be negative (0 frees a deleted Service's addresses at once)"))
	}
	if c.LowestSpread < 1 {
		errs = append(errs, errors.New("--lowest-spread must be at least 1 (1: always exactly the lowest free address)"))
	}
	if c.ReconcileInterval <= 0 {
		errs = append(errs, errors.New("--reconcile-interval must be positive"))
	}
	if c.Events != EventsAll && c.Events != EventsWarnings {
		errs = append(errs, fmt.Errorf("--events=%q: want %q or %q", c.Events, EventsAll, EventsWarnings))
	}
	if c.Profiling && c.MetricsListen == "" {
		errs = append(errs, errors.New("--profiling serves on --metrics-listen, which is empty"))
	}
	if c.Dev {
		// No cluster: no Lease to hold, no reconciler to elect.
		c.LeaderElection = false
	}
	if c.Namespace == "" {
		c.Namespace = getenv("POD_NAMESPACE")
	}
	if c.Namespace == "" {
		c.Namespace = "dualstack-webhook"
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParseServiceCIDRs parses --service-cidrs: see alloc.ParseServiceCIDRs.
func ParseServiceCIDRs(s string) ([]netip.Prefix, error) { return alloc.ParseServiceCIDRs(s) }
