package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/policy"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
)

// Evaluator is the policy engine as the webhook sees it: policy.Evaluate in
// production, a stub in HTTP-layer tests.
type Evaluator func(policy.Input) (*policy.Decision, error)

// FamilySource reports the cluster's Service IP families, primary first.
// It errors while they are unknown (ServiceCIDR cache not synced yet).
type FamilySource interface {
	Families() ([]corev1.IPFamily, error)
}

// StaticFamilies is a FamilySource that never changes (--service-cidrs,
// --dev, tests).
type StaticFamilies []corev1.IPFamily

// Families returns the fixed families.
func (s StaticFamilies) Families() ([]corev1.IPFamily, error) {
	if len(s) == 0 {
		return nil, errors.New("no service IP families configured")
	}
	return s, nil
}

// NamespaceGetter reads a Namespace, normally from an informer cache. A
// NotFound error means "no labels, no annotation"; any other error is
// transient. ctx carries the apiserver's deadline for implementations that
// fall back to a live read.
type NamespaceGetter interface {
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// Check is a named readiness condition for /readyz.
type Check struct {
	Name string
	Func func() error
}

// Options configure a Handler. Zero values are usable where noted.
type Options struct {
	// Log receives one line per review; nil discards.
	Log *zap.Logger
	// Registry receives the metrics; nil means a private registry.
	Registry prometheus.Registerer
	// Evaluate is the policy engine. Required.
	Evaluate Evaluator
	// Families are the cluster's Service IP families. Required.
	Families FamilySource
	// Namespaces, when set, provides the skip label and the default policy
	// annotation of Namespaces. nil (--dev) means no Namespace has either.
	Namespaces NamespaceGetter
	// DefaultPolicy is --default-ip-family-policy; nil keeps the
	// apiserver's default.
	DefaultPolicy *corev1.IPFamilyPolicy
	// Ready lists the conditions /readyz checks besides draining.
	Ready []Check
	// CertNotAfter, when set, is exported as a metric.
	CertNotAfter func() time.Time
	// Allocator pins clusterIPs on /mutate and checks them on /validate;
	// nil means defaulting only (--pinning=false).
	Allocator Allocator
	// Namespace and PoolsConfigMap name the pools ConfigMap that /validate
	// guards (--namespace, --pools-configmap). Empty: not guarded.
	Namespace, PoolsConfigMap string
	// APIServer, when set, is nil while the apiserver answers. A review
	// that needs the allocator is refused at once (500) when it is not:
	// reservations are writes to the apiserver, and the caches behind the
	// allocator stop moving when it is cut off, so waiting would only
	// hold the request until the apiserver gives up, and deciding from
	// the caches would trust a stale view.
	APIServer func() error
}

// Handler serves the webhook's TLS endpoints.
type Handler struct {
	log            *zap.Logger
	evaluate       Evaluator
	families       FamilySource
	namespaces     NamespaceGetter
	defaultPolicy  *corev1.IPFamilyPolicy
	checks         []Check
	metrics        *metrics
	alloc          Allocator
	namespace      string
	poolsConfigMap string
	apiserver      func() error
	draining       atomic.Bool
	router         chi.Router
	// reviews are the POST review routes, served without the router: they
	// are the hot path and need none of its features (exact paths, no
	// parameters). Everything else, including other methods on these
	// paths, goes through the router.
	reviews map[string]http.Handler
}

var _ http.Handler = (*Handler)(nil)

// NewHandler builds the router: POST /mutate (defaulting and pinning),
// POST /default (defaulting only, no side effects: for a registration with
// sideEffects None), POST /validate, GET /healthz, GET /readyz.
func NewHandler(o Options) (*Handler, error) {
	if o.Evaluate == nil || o.Families == nil {
		return nil, errors.New("webhook: Evaluate and Families are required")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.Registry, o.CertNotAfter)
	if err != nil {
		return nil, fmt.Errorf("webhook: registering metrics: %w", err)
	}
	h := &Handler{
		log:            o.Log,
		evaluate:       o.Evaluate,
		families:       o.Families,
		namespaces:     o.Namespaces,
		defaultPolicy:  o.DefaultPolicy,
		checks:         o.Ready,
		metrics:        m,
		alloc:          o.Allocator,
		namespace:      o.Namespace,
		poolsConfigMap: o.PoolsConfigMap,
		apiserver:      o.APIServer,
	}
	r := chi.NewRouter()
	h.reviews = map[string]http.Handler{}
	for _, ep := range []endpoint{mutateEndpoint, defaultEndpoint, validateEndpoint} {
		path := "/" + ep.String()
		h.reviews[path] = h.instrument(ep.String(), h.serveReview(ep))
		r.Method(http.MethodPost, path, h.reviews[path])
	}
	r.Method(http.MethodGet, "/healthz", h.instrument("healthz", h.serveHealthz))
	r.Method(http.MethodGet, "/readyz", h.instrument("readyz", h.serveReadyz))
	r.NotFound(h.instrument("other", func(w http.ResponseWriter, _ *http.Request, _ *reqState) {
		http.Error(w, "not found: the webhook serves POST /mutate, POST /default, POST /validate, GET /healthz, GET /readyz", http.StatusNotFound)
	}).ServeHTTP)
	r.MethodNotAllowed(h.instrument("other", func(w http.ResponseWriter, r *http.Request, _ *reqState) {
		http.Error(w, "method "+r.Method+" not allowed on "+r.URL.Path, http.StatusMethodNotAllowed)
	}).ServeHTTP)
	h.router = r
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.RawPath == "" {
		if review, ok := h.reviews[r.URL.Path]; ok {
			review.ServeHTTP(w, r)
			return
		}
	}
	h.router.ServeHTTP(w, r)
}

// Drain makes /readyz fail from now on. Called first on SIGTERM so the pod
// leaves the Service endpoints while in-flight reviews finish.
func (h *Handler) Drain() { h.draining.Store(true) }

// reqState carries what a route decided back to the instrumenting wrapper,
// and when the request started.
type reqState struct {
	outcome string
	start   time.Time
}

type routeFunc func(http.ResponseWriter, *http.Request, *reqState)

// statusWriter remembers the status code for metrics and whether anything
// was written (a panic after the header was sent cannot become a 500).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument wraps a route with panic recovery and metrics. Recovery sits
// inside metrics so a panic is counted (outcome "failed"), and answers 500
// so the apiserver applies the webhook's failurePolicy instead of seeing a
// reset connection.
func (h *Handler) instrument(name string, next routeFunc) http.Handler {
	rm := h.metrics.route(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for both (they escape through the route call).
		both := &struct {
			reqState
			statusWriter
		}{reqState{start: time.Now()}, statusWriter{ResponseWriter: w}}
		st, sw := &both.reqState, &both.statusWriter
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
					panic(p)
				}
				h.log.Error("panic serving request", zap.String("endpoint", name),
					zap.Any("panic", p), zap.Stack("stack"))
				st.outcome = outcomeFailed
				if sw.status == 0 {
					http.Error(sw, "internal error", http.StatusInternalServerError)
				}
			}
			outcome := st.outcome
			if outcome == "" {
				switch {
				case sw.status >= 500:
					outcome = outcomeFailed
				case sw.status >= 400:
					outcome = outcomeRejected
				default:
					outcome = outcomeOK
				}
			}
			rm.observe(outcome, time.Since(st.start))
		}()
		next(sw, r, st)
	})
}

func (h *Handler) serveHealthz(w http.ResponseWriter, _ *http.Request, st *reqState) {
	// Liveness is "the process serves HTTP". Expired certificates or lost
	// caches are readiness problems: a restart would not fix them, so they
	// must not fail liveness and trigger restart loops.
	st.outcome = outcomeOK
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (h *Handler) serveReadyz(w http.ResponseWriter, _ *http.Request, st *reqState) {
	var b strings.Builder
	ok := true
	if h.draining.Load() {
		ok = false
		b.WriteString("[-]shutdown failed: shutting down\n")
	}
	for _, c := range h.checks {
		if err := c.Func(); err != nil {
			ok = false
			fmt.Fprintf(&b, "[-]%s failed: %s\n", c.Name, oneLine(err.Error()))
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ok {
		st.outcome = outcomeUnready
		w.WriteHeader(http.StatusServiceUnavailable)
		b.WriteString("readyz check failed\n")
	} else {
		st.outcome = outcomeOK
		b.WriteString("ok\n")
	}
	_, _ = w.Write([]byte(b.String()))
}

// maxTimeout caps the apiserver's ?timeout= (webhook timeoutSeconds is at
// most 30 s, admissionregistration/v1 validation).
const maxTimeout = 30 * time.Second

// answerMargin is how much of the apiserver's timeout the webhook keeps
// for itself: a tenth, between 200 ms and 1 s. Work that reaches the
// deadline (a slow apiserver holding a reservation write) is abandoned
// early enough that our answer, saying why, arrives before the apiserver
// stops waiting and reports a bare "context deadline exceeded".
func answerMargin(timeout time.Duration) time.Duration {
	return min(max(timeout/10, 200*time.Millisecond), time.Second)
}

// requestContext derives the review's deadline from the apiserver's
// ?timeout= query parameter (set from the webhook's timeoutSeconds:
// k8s.io/apiserver pkg/admission/plugin/webhook/mutating/dispatcher.go),
// minus answerMargin, so work the apiserver no longer waits for stops and
// the answer still reaches it.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	if r.URL.RawQuery != "" {
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
			d = min(d, maxTimeout)
			return context.WithTimeoutCause(r.Context(), d-answerMargin(d), &errOutOfTime{timeout: d, margin: answerMargin(d)})
		}
	}
	return r.Context(), func() {}
}

// errOutOfTime is the cause of a review's deadline: the apiserver (or
// whatever the allocator waited for) did not answer within the share of
// timeoutSeconds the webhook gives itself.
type errOutOfTime struct{ timeout, margin time.Duration }

func (e *errOutOfTime) Error() string {
	return fmt.Sprintf("no answer from the apiserver within %s: the webhook gives up %s before its timeoutSeconds (%s) so that this answer reaches the apiserver in time",
		e.timeout-e.margin, e.margin, e.timeout)
}

// outOfTime turns an error caused by the review's own deadline into one
// that says so (as errUnavailable: a 500, failurePolicy decides); other
// errors are returned as they are.
func outOfTime(ctx context.Context, err error) error {
	var oot *errOutOfTime
	if err == nil || !errors.As(context.Cause(ctx), &oot) {
		return err
	}
	return &errUnavailable{fmt.Errorf("%w (last error: %s)", oot, oneLine(err.Error()))}
}

func (h *Handler) serveReview(ep endpoint) routeFunc {
	return func(w http.ResponseWriter, r *http.Request, st *reqState) {
		body, err := readBody(r)
		if err == nil {
			var in *reviewIn
			if in, err = decodeReview(body); err == nil {
				h.answer(w, r, st, ep, in, body)
				return
			}
		}
		var he *httpError
		if !errors.As(err, &he) {
			he = &httpError{http.StatusBadRequest, oneLine(err.Error())}
		}
		st.outcome = outcomeRejected
		h.log.Info("rejected request", zap.String("endpoint", ep.String()),
			zap.Int("code", he.code), zap.String("reason", he.msg), zap.String("remote", r.RemoteAddr))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(he.code)
		_, _ = w.Write([]byte(he.msg + "\n"))
	}
}

// logFields recycles the review log line's field list: zap copies what it
// writes, and a fresh list per review was two of its allocations.
var logFields = sync.Pool{New: func() any { s := make([]zap.Field, 0, 11); return &s }}

func (h *Handler) answer(w http.ResponseWriter, r *http.Request, st *reqState, ep endpoint, in *reviewIn, body []byte) {
	ctx, cancel := requestContext(r)
	defer cancel()
	res := h.review(ctx, ep, in.Request)
	out, err := encodeReview(in.APIVersion, res.resp)
	if err != nil {
		// Cannot happen with the types involved; answer like a panic would.
		panic(fmt.Sprintf("encoding AdmissionReview: %v", err))
	}
	st.outcome = res.outcome
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)

	lvl := zapcore.InfoLevel
	if res.err != nil {
		lvl = zapcore.ErrorLevel
	}
	if ce := h.log.Check(lvl, "admission review"); ce != nil {
		req := in.Request
		fp := logFields.Get().(*[]zap.Field)
		fields := append((*fp)[:0],
			zap.String("endpoint", ep.String()),
			zap.String("uid", string(req.UID)),
			zap.String("namespace", res.namespace),
			zap.String("name", res.name),
			zap.String("operation", req.Operation),
			zap.Bool("dryRun", req.dryRun()),
			zap.Bool("allowed", res.resp.Allowed),
			zap.String("outcome", res.outcome),
			zap.Duration("took", time.Since(st.start)),
		)
		if res.reason != "" {
			fields = append(fields, zap.String("reason", res.reason))
		}
		if res.err != nil {
			fields = append(fields, zap.Error(res.err))
		}
		ce.Write(fields...)
		clear(fields) // drop references to this review's strings and error
		*fp = fields[:0]
		logFields.Put(fp)
	}
	if ce := h.log.Check(zapcore.DebugLevel, "admission review bodies"); ce != nil {
		ce.Write(zap.String("uid", string(in.Request.UID)), zap.ByteString("request", body), zap.ByteString("response", out))
	}
}
