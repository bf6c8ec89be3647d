package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// The apiserver probe's timings. Every replica asks the apiserver's
// /readyz once a second (a few hundred bytes; system:public-info-viewer
// lets any client read it). An answer older than probeStale means the
// replica is cut off: readiness fails, so the pod leaves the Service
// endpoints, and a review that needs the allocator is refused at once
// instead of waiting on writes that cannot succeed or deciding from caches
// that no longer move.
const (
	probeInterval = time.Second
	probeTimeout  = 2 * time.Second
	probeStale    = 3 * time.Second
	// skewTolerance is the clock difference with the apiserver that is
	// left uncorrected: the HTTP Date header has a resolution of one
	// second, so smaller estimates are noise.
	skewTolerance = 2 * time.Second
)

// apiserverProbe tells whether the apiserver answers and how far this
// process's clock is from the apiserver's.
type apiserverProbe struct {
	get func(ctx context.Context) (*http.Response, error)
	// now is the process's notion of time (the clock allocator and
	// reconciler read, before correction), used for the skew; staleness
	// uses the monotonic time.Now, which no clock jump moves.
	now   clock.Clock
	mono  func() time.Time
	log   *zap.Logger
	gauge prometheus.Gauge // nil: not exported

	mu        sync.Mutex
	lastOK    time.Time // monotonic
	lastErr   error
	downSince time.Time // monotonic; first failure after a success
	skew      time.Duration
	skewKnown bool
	warned    bool
}

func newAPIServerProbe(get func(ctx context.Context) (*http.Response, error), now clock.Clock, log *zap.Logger, reg prometheus.Registerer) (*apiserverProbe, error) {
	p := &apiserverProbe{get: get, now: now, mono: time.Now, log: log}
	if reg != nil {
		p.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "dualstack_webhook", Name: "clock_skew_seconds",
			Help: "This replica's clock minus the apiserver's, estimated from the Date header of /readyz; beyond 2s expiries are computed in the apiserver's time.",
		})
		if err := reg.Register(p.gauge); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// run probes every probeInterval until ctx ends.
func (p *apiserverProbe) run(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		p.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks once and records the answer.
func (p *apiserverProbe) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	sent := p.now.Now()
	resp, err := p.get(ctx)
	got := p.now.Now()
	if err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("apiserver /readyz: HTTP %d %s", resp.StatusCode, failedChecks(string(body)))
		} else if date, derr := http.ParseTime(resp.Header.Get("Date")); derr == nil {
			// Date is truncated to the second: the apiserver's time at
			// the answer is half a second later on average; ours is the
			// middle of the round trip.
			mid := sent.Add(got.Sub(sent) / 2)
			p.setSkew(mid.Sub(date.Add(500 * time.Millisecond)))
		}
	}
	if ctx.Err() != nil && err != nil && !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("apiserver did not answer /readyz within %s: %w", probeTimeout, err)
	}
	now := p.mono()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		if !p.downSince.IsZero() {
			p.log.Info("apiserver reachable again", zap.Duration("after", now.Sub(p.downSince).Round(time.Millisecond)))
		}
		p.lastOK, p.lastErr, p.downSince = now, nil, time.Time{}
		return
	}
	if p.downSince.IsZero() {
		p.downSince = now
		p.log.Warn("apiserver probe failed", zap.Error(err))
	}
	p.lastErr = err
}

// failedChecks keeps the "[-]… failed" lines of a /readyz body.
func failedChecks(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "[-]") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	if len(out) == 0 {
		return strings.TrimSpace(oneLine(body))
	}
	return strings.Join(out, ", ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (p *apiserverProbe) setSkew(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gauge != nil {
		p.gauge.Set(d.Seconds())
	}
	wasOff := p.skewKnown && abs(p.skew) > skewTolerance
	p.skew, p.skewKnown = d, true
	if off := abs(d) > skewTolerance; off && !p.warned {
		p.warned = true
		p.log.Warn("this replica's clock differs from the apiserver's; pending grace and retention are computed in the apiserver's time",
			zap.Duration("skew", d.Round(time.Millisecond)))
	} else if !off && wasOff {
		p.warned = false
		p.log.Info("clock agrees with the apiserver's again", zap.Duration("skew", d.Round(time.Millisecond)))
	}
}

// Ready is /readyz's "apiserver" check and the allocator's gate: nil when
// the apiserver answered within probeStale.
func (p *apiserverProbe) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.mono()
	switch {
	case p.lastOK.IsZero() && p.lastErr == nil:
		return errors.New("apiserver not probed yet")
	case p.lastOK.IsZero():
		return fmt.Errorf("apiserver unreachable: %v", p.lastErr)
	case now.Sub(p.lastOK) <= probeStale:
		return nil
	case p.lastErr != nil:
		return fmt.Errorf("apiserver unreachable for %s: %v", now.Sub(p.downSince).Round(100*time.Millisecond), p.lastErr)
	}
	return fmt.Errorf("apiserver has not answered for %s", now.Sub(p.lastOK).Round(100*time.Millisecond))
}

// Skew is the correction the clock applies (zero within skewTolerance)
// and whether it has been measured.
func (p *apiserverProbe) Skew() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if abs(p.skew) <= skewTolerance {
		return 0, p.skewKnown
	}
	return p.skew, p.skewKnown
}

// Clock is the process clock corrected by the measured skew.
func (p *apiserverProbe) Clock() clock.Clock {
	return apiserverClock{Clock: p.now, skew: p.Skew}
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// apiserverClock is the process clock corrected by the measured skew, so
// that a replica whose clock jumped computes pending grace and retention
// in the apiserver's time (which stamps every reservation's neighbours) and
// frees nothing early. Durations and timers are the base clock's.
type apiserverClock struct {
	clock.Clock
	skew func() (time.Duration, bool)
}

func (c apiserverClock) Now() time.Time {
	d, _ := c.skew()
	return c.Clock.Now().Add(-d)
}

func (c apiserverClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// offsetClock is the base clock moved by a fixed offset: the hidden
// --test-clock-offset, which the fault suite uses to jump one replica's
// clock without touching the machine's.
type offsetClock struct {
	clock.Clock
	offset time.Duration
}

func (c offsetClock) Now() time.Time                  { return c.Clock.Now().Add(c.offset) }
func (c offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
