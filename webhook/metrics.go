package webhook

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// durationBuckets are kube-apiserver's own admission latency buckets
// (k8s.io/apiserver pkg/admission/metrics: step/controller admission
// duration, 5 ms … 2.5 s), so that our histogram lines up with the
// apiserver's apiserver_admission_webhook_admission_duration_seconds.
var durationBuckets = []float64{0.005, 0.025, 0.1, 0.5, 1.0, 2.5}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newMetrics registers the webhook's collectors on reg (never the global
// registry: tests and several handlers in one process must not collide).
func newMetrics(reg prometheus.Registerer, certNotAfter func() time.Time) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "dualstack_webhook",
			Name:      "http_requests_total",
			Help:      "Requests served on the TLS listener, by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "dualstack_webhook",
			Name:      "http_request_duration_seconds",
			Help:      "Time from request start to response written, by endpoint and outcome.",
			Buckets:   durationBuckets,
		}, []string{"endpoint", "outcome"}),
	}
	cs := []prometheus.Collector{m.requests, m.duration}
	if certNotAfter != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "dualstack_webhook",
			Name:      "certificate_expiration_timestamp_seconds",
			Help:      "Expiry (Unix time) of the serving certificate in use; 0 when none is loaded.",
		}, func() float64 {
			t := certNotAfter()
			if t.IsZero() {
				return 0
			}
			return float64(t.Unix())
		}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// routeMetrics are the series of one endpoint, resolved once per outcome:
// WithLabelValues hashes both labels and looks the series up under the
// vector's lock on every call, which showed in the review's profile. Series
// are still created on first use, so /metrics lists the same ones.
type routeMetrics struct {
	m        *metrics
	endpoint string
	mu       sync.RWMutex
	series   map[string]seriesPair
}

type seriesPair struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) route(endpoint string) *routeMetrics {
	return &routeMetrics{m: m, endpoint: endpoint, series: map[string]seriesPair{}}
}

func (r *routeMetrics) observe(outcome string, d time.Duration) {
	r.mu.RLock()
	s, ok := r.series[outcome]
	r.mu.RUnlock()
	if !ok {
		s = seriesPair{r.m.requests.WithLabelValues(r.endpoint, outcome), r.m.duration.WithLabelValues(r.endpoint, outcome)}
		r.mu.Lock()
		r.series[outcome] = s
		r.mu.Unlock()
	}
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
}
