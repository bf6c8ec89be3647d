package configmap

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Metrics times the store's requests to the apiserver as this process
// sees them. Beside the apiserver's own apiserver_request_duration_seconds
// it tells how much of an admission's time is its reservation write, and
// how much of that the apiserver accounts for.
type Metrics struct {
	duration *prometheus.HistogramVec
}

// storeBuckets run from 1 ms to 4 s in doublings: a write is a few
// milliseconds on an idle control plane and hundreds on a busy one, and
// the admission buckets (5, 25, 100 ms ...) are too coarse to follow it.
var storeBuckets = prometheus.ExponentialBuckets(0.001, 2, 13)

// NewMetrics registers the store's collectors on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "dualstack_webhook",
		Name:      "store_request_duration_seconds",
		Help:      "Time of the reservation store's requests to the apiserver (create, update, delete, get), by verb and result.",
		Buckets:   storeBuckets,
	}, []string{"verb", "result"})}
	if err := reg.Register(m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// observe records one request; m may be nil.
func (m *Metrics) observe(verb string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(verb, result(err)).Observe(time.Since(start).Seconds())
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case apierrors.IsAlreadyExists(err):
		return "exists"
	case apierrors.IsConflict(err):
		return "conflict"
	case apierrors.IsNotFound(err):
		return "notfound"
	}
	return "error"
}
