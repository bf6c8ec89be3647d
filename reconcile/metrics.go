package reconcile

import (
	"context"
	"math/big"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// Metrics are the reconciler's counters. Names are what the chart's
// PrometheusRule alerts on (dualstack_webhook_reconcile_errors_total,
// dualstack_webhook_pool_addresses).
type Metrics struct {
	// ReconcileErrors counts syncs that failed (in whole or in part).
	ReconcileErrors prometheus.Counter
	// Conflicts counts addresses found reserved to one owner while another
	// live Service held them (the live one wins).
	Conflicts prometheus.Counter
	// Collected counts reservations freed: pending past their grace, sticky
	// past their retention, and addresses a live Service gave up.
	Collected prometheus.Counter
	// Imported counts addresses recorded for live Services that had no
	// reservation (pins made while the webhook was down or excluded, or
	// state rebuilt after the ConfigMaps were deleted).
	Imported prometheus.Counter
	// Syncs counts completed syncs (successful or not). Only the replica
	// running the reconciler (the leader) counts any.
	Syncs prometheus.Counter
	// Backlog is the work the last completed sync found: addresses it
	// confirmed, imported, released, freed or collected, plus the items it
	// failed on. A sync after the cluster went quiet sets it to 0, so 0
	// with Syncs still counting is "the reconciler has caught up".
	Backlog prometheus.Gauge
}

// NewMetrics registers the counters and the pool gauge on reg. The gauge
// dualstack_webhook_pool_addresses{pool,family,state} is computed on scrape
// from the pools in force and the store, so every replica reports it (not
// only the leader) and it can never drift from the state; the states free,
// pending, bound and sticky partition each pool.
func NewMetrics(reg prometheus.Registerer, pools func() *alloc.Pools, store ReservationLister) (*Metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "dualstack_webhook", Name: name, Help: help})
	}
	m := &Metrics{
		ReconcileErrors: counter("reconcile_errors_total", "Reconciler syncs that failed in whole or in part."),
		Conflicts:       counter("allocation_conflicts_total", "Addresses reserved to one owner but held by another live Service (the live one wins)."),
		Collected:       counter("reservations_collected_total", "Reservations freed: pending past the grace, sticky past the retention, or given up by a live Service."),
		Imported:        counter("reservations_imported_total", "Addresses recorded for live Services that had no reservation."),
		Syncs:           counter("reconcile_syncs_total", "Reconciler syncs completed (only the replica running the reconciler counts)."),
		Backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "dualstack_webhook", Name: "reconcile_backlog",
			Help: "Repairs the last completed sync made or failed (confirms, imports, releases, frees, collections, errors); 0 once the reservations match the live Services."}),
	}
	for _, c := range []prometheus.Collector{m.ReconcileErrors, m.Conflicts, m.Collected, m.Imported, m.Syncs, m.Backlog, &poolCollector{pools: pools, store: store}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var poolDesc = prometheus.NewDesc("dualstack_webhook_pool_addresses",
	"Addresses of each pool and family by state (free, pending, bound, sticky); the states partition the pool.",
	[]string{"pool", "family", "state"}, nil)

// scrapeTimeout bounds the store read of one scrape (Prometheus' default
// scrape timeout is 10 s).
const scrapeTimeout = 5 * time.Second

type poolCollector struct {
	pools func() *alloc.Pools
	store ReservationLister
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolDesc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.pools()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	rs, err := c.store.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(poolDesc, err)
		return
	}
	type key struct {
		pool   string
		family corev1.IPFamily
		state  alloc.State
	}
	n := map[key]float64{}
	for _, r := range rs {
		n[key{r.Pool, r.Family(), r.State}]++
	}
	for _, pool := range p.List {
		for _, f := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
			if !pool.Has(f) {
				continue
			}
			size, _ := new(big.Float).SetInt(pool.Addresses.Size(f)).Float64()
			used := 0.0
			for _, st := range []alloc.State{alloc.StatePending, alloc.StateBound, alloc.StateSticky} {
				v := n[key{pool.Name, f, st}]
				used += v
				ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, v, pool.Name, string(f), string(st))
			}
			ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, max(size-used, 0), pool.Name, string(f), "free")
		}
	}
}
