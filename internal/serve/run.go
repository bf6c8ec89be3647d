package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/certs"
	"github.com/dualstack-webhook/dualstack-webhook/policy"
	"github.com/dualstack-webhook/dualstack-webhook/webhook"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Main is the `serve` subcommand: parse, then Run until ctx ends.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := ParseConfig(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	log := NewLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	return Run(ctx, cfg, log, stdout)
}

// NewLogger builds the process logger: JSON for clusters, colourless
// console lines for --dev.
func NewLogger(cfg *Config, w io.Writer) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder // "1.2ms", not 0.0012
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), cfg.LogLevel)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w))))
}

// Listeners lets tests bind ports themselves; nil fields are bound from
// Config.
type Listeners struct {
	Webhook, Metrics net.Listener
}

// Run wires everything and serves until ctx ends. It is the only place
// where components are built and connected.
func Run(ctx context.Context, cfg *Config, log *zap.Logger, stdout io.Writer) error {
	return RunWith(ctx, cfg, log, stdout, Listeners{})
}

// RunWith is Run with pre-bound listeners.
func RunWith(ctx context.Context, cfg *Config, log *zap.Logger, stdout io.Writer, ls Listeners) (err error) {
	start := time.Now()
	// ctx ending (SIGTERM) starts the shutdown, during which the server
	// keeps answering for --shutdown-delay: the certificate source, the
	// informers and the allocator must outlive it, or a review that still
	// arrives waits on a stopped cache until the apiserver's timeout (found
	// on a real node: creates failed during a rolling update). They run on
	// work, which ends only when Serve has returned.
	signal := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Until the server runs, a signal still ends the start-up at once.
	var serving atomic.Bool
	go func() {
		select {
		case <-signal.Done():
			if !serving.Load() {
				cancel()
			}
		case <-ctx.Done():
		}
	}()

	// client-go (leader election, the event broadcaster, informers) logs
	// through klog; route it into the same structured stream. klog is
	// process-global, so this is the one place that sets it.
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Cluster client (none in --dev).
	var cs kubernetes.Interface
	var rc *rest.Config
	if cfg.Dev {
		if cfg.Kubeconfig != "" {
			log.Warn("--dev runs without a cluster: --kubeconfig is ignored")
		}
	} else {
		if rc, err = restConfig(cfg.Kubeconfig); err != nil {
			return err
		}
		if cs, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}

	// Serving certificate.
	var src certs.Source
	var devCA string
	switch {
	case cfg.TLSCertFile != "":
		fsrc, err := certs.NewFileSource(cfg.TLSCertFile, cfg.TLSKeyFile, log.Named("certs"))
		if err != nil {
			return err
		}
		src = fsrc
	case cfg.Bootstrap.Enabled():
		bc, err := cfg.Bootstrap.Config(cs, cfg.Namespace, log.Named("certs"))
		if err != nil {
			return err
		}
		if src, err = certs.NewBootstrap(bc); err != nil {
			return err
		}
	case cfg.Dev:
		ss, err := certs.NewSelfSigned(certs.DevHosts)
		if err != nil {
			return err
		}
		if err := ss.WriteCA(cfg.DevCAFile); err != nil {
			return err
		}
		src, devCA = ss, cfg.DevCAFile
	default:
		return errors.New("no serving certificate: pass --tls-cert-file/--tls-key-file, --tls-bootstrap-secret or --dev")
	}
	go func() {
		if err := src.Start(ctx); err != nil && ctx.Err() == nil {
			log.Error("certificate source stopped", zap.Error(err))
		}
	}()
	checks := []webhook.Check{{Name: "certificate", Func: src.Ready}}

	// Families and namespaces.
	var families webhook.FamilySource
	var namespaces webhook.NamespaceGetter
	if len(cfg.ServiceCIDRs) > 0 {
		families = webhook.StaticFamilies(cfg.Families())
	}
	var pin *pinning
	if cs != nil {
		caches, err := newClusterCaches(cs, families == nil, cfg.Pinning)
		if err != nil {
			return err
		}
		if families == nil {
			families = serviceCIDRFamilies{caches}
		}
		namespaces = namespaceGetter{caches, cs}
		checks = append(checks, webhook.Check{Name: "informers", Func: caches.synced})
		caches.factory.Start(ctx.Done())
		// Shutdown waits for the informers, which stop on ctx: cancel first.
		defer func() { cancel(); caches.factory.Shutdown() }()
		if cfg.Pinning {
			probe, err := startAPIServerProbe(ctx, cfg, rc, log, reg)
			if err != nil {
				return err
			}
			var stopPinning func()
			if pin, stopPinning, err = startPinning(ctx, cfg, rc, cs, caches, probe, log, reg); err != nil {
				return fmt.Errorf("pinning: %w", err)
			}
			defer func() { cancel(); stopPinning() }()
		}
	} else if cfg.Pinning {
		if pin, err = startDevPinning(cfg, log, reg); err != nil {
			return fmt.Errorf("pinning: %w", err)
		}
	}
	var allocator webhook.Allocator
	var apiserver func() error
	if pin != nil {
		allocator = pin.alloc
		checks = append(checks, pin.ready...)
		apiserver = pin.apiserver
	}
	checks = append(checks, webhook.Check{Name: "families", Func: func() error {
		_, err := families.Families()
		return err
	}})

	h, err := webhook.NewHandler(webhook.Options{
		Log:            log.Named("webhook"),
		Registry:       reg,
		Evaluate:       policy.Evaluate,
		Families:       families,
		Namespaces:     namespaces,
		DefaultPolicy:  cfg.DefaultPolicy,
		Ready:          checks,
		CertNotAfter:   src.NotAfter,
		Allocator:      allocator,
		Namespace:      cfg.Namespace,
		PoolsConfigMap: cfg.PoolsConfigMap,
		APIServer:      apiserver,
	})
	if err != nil {
		return err
	}

	if ls.Webhook == nil {
		if ls.Webhook, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
	}
	if ls.Metrics == nil && cfg.MetricsListen != "" {
		if ls.Metrics, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ls.Webhook.Close()
			return fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if cfg.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	fields := []zap.Field{
		zap.String("listen", ls.Webhook.Addr().String()),
		zap.Stringers("serviceCIDRs", cfg.ServiceCIDRs),
		zap.Bool("dev", cfg.Dev),
		zap.Duration("startup", time.Since(start)),
	}
	if ls.Metrics != nil {
		fields = append(fields, zap.String("metricsListen", ls.Metrics.Addr().String()))
	}
	log.Info("serving", fields...)
	if cfg.Dev {
		printDevBanner(stdout, ls.Webhook.Addr(), ls.Metrics, devCA)
	}

	serving.Store(true)
	if signal.Err() != nil {
		return signal.Err()
	}
	return webhook.Serve(signal, webhook.ServeOptions{
		Log:             log.Named("server"),
		Listener:        ls.Webhook,
		GetCertificate:  src.GetCertificate,
		Handler:         h,
		MetricsListener: ls.Metrics,
		MetricsHandler:  mux,
		BeforeShutdown:  h.Drain,
		ShutdownDelay:   cfg.ShutdownDelay,
	})
}

// startAPIServerProbe starts asking the apiserver's /readyz (see
// apiserverProbe) with the webhook's own credentials and transport, so a
// replica cut off from the apiserver notices it through the same path
// its reservations take.
func startAPIServerProbe(ctx context.Context, cfg *Config, rc *rest.Config, log *zap.Logger, reg prometheus.Registerer) (*apiserverProbe, error) {
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("apiserver probe: %w", err)
	}
	u, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return nil, fmt.Errorf("apiserver probe: %w", err)
	}
	u.Path = "/readyz"
	url := u.String()
	get := func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		return hc.Do(req)
	}
	var base clock.Clock = clock.RealClock{}
	if cfg.TestClockOffset != 0 {
		log.Warn("test hook: this process's clock is moved", zap.Duration("offset", cfg.TestClockOffset))
		base = offsetClock{Clock: base, offset: cfg.TestClockOffset}
	}
	p, err := newAPIServerProbe(get, base, log.Named("apiserver"), reg)
	if err != nil {
		return nil, err
	}
	go p.run(ctx)
	return p, nil
}

// printDevBanner tells a developer how to talk to the dev server.
func printDevBanner(w io.Writer, addr net.Addr, metrics net.Listener, caFile string) {
	port := "8443"
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = fmt.Sprint(ta.Port)
	}
	base := "https://localhost:" + port
	var b strings.Builder
	fmt.Fprintf(&b, "dualstack-webhook --dev is ready on %s (self-signed; CA certificate: %s)\n", base, caFile)
	if metrics != nil {
		if ta, ok := metrics.Addr().(*net.TCPAddr); ok {
			fmt.Fprintf(&b, "metrics: http://localhost:%d/metrics\n", ta.Port)
		}
	}
	fmt.Fprintf(&b, "try:\n  curl --cacert %s -H 'Content-Type: application/json' --data @examples/admissionreview-legacy.json %s/mutate\n", caFile, base)
	_, _ = io.WriteString(w, b.String())
}
