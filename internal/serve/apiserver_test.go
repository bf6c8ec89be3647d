package serve

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeAPIServer answers the probe: 200 with a Date header from its own
// clock, an HTTP error status with a /readyz body, or a transport error.
type fakeAPIServer struct {
	mu     sync.Mutex
	now    time.Time
	status int
	body   string
	err    error
	hang   bool
}

func (f *fakeAPIServer) set(fn func(*fakeAPIServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeAPIServer) get(ctx context.Context) (*http.Response, error) {
	f.mu.Lock()
	status, body, err, hang, now := f.status, f.body, f.err, f.hang, f.now
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	rec := &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}
	rec.Header.Set("Date", now.UTC().Format(http.TimeFormat))
	if body != "" {
		rec.Body = nopCloser{strings.NewReader(body)}
	}
	return rec, nil
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// TestAPIServerProbeReadiness: /readyz's "apiserver" check (and the
// allocator's gate) is false before the first answer, true while the
// apiserver answers, and false with the reason once it has not answered
// for probeStale: refused connections, a failing /readyz (etcd down) and
// a black hole (no answer within probeTimeout) alike.
func TestAPIServerProbeReadiness(t *testing.T) {
	apiNow := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	srv := &fakeAPIServer{now: apiNow, status: http.StatusOK}
	p, err := newAPIServerProbe(srv.get, clocktesting.NewFakeClock(apiNow), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mono := time.Unix(1000, 0)
	p.mono = func() time.Time { return mono }
	ctx := context.Background()

	if err := p.Ready(); err == nil || !strings.Contains(err.Error(), "not probed yet") {
		t.Fatalf("before any probe: %v, want not probed yet", err)
	}
	p.probe(ctx)
	if err := p.Ready(); err != nil {
		t.Fatalf("after an answer: %v", err)
	}
	for name, tc := range map[string]struct {
		fault func(*fakeAPIServer)
		want  string
	}{
		"connection refused": {func(f *fakeAPIServer) { f.err = errors.New("dial tcp 127.0.0.1:6443: connect: connection refused") }, "connection refused"},
		"etcd down": {func(f *fakeAPIServer) {
			f.status, f.body = 500, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
		}, "HTTP 500 [-]etcd failed: reason withheld"},
		"black hole": {func(f *fakeAPIServer) { f.hang = true }, "did not answer /readyz within 2s"},
	} {
		t.Run(name, func(t *testing.T) {
			srv.set(tc.fault)
			mono = mono.Add(time.Second)
			p.probe(ctx)
			if err := p.Ready(); err != nil {
				t.Errorf("one failed probe 1s after an answer: %v, want still ready (within %s)", err, probeStale)
			}
			mono = mono.Add(probeStale)
			p.probe(ctx)
			err := p.Ready()
			if err == nil || !strings.Contains(err.Error(), "apiserver unreachable for") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("after %s without an answer: %v, want unreachable with %q", probeStale+time.Second, err, tc.want)
			}
			srv.set(func(f *fakeAPIServer) { f.status, f.body, f.err, f.hang = http.StatusOK, "", nil, false })
			p.probe(ctx)
			if err := p.Ready(); err != nil {
				t.Errorf("answering again: %v", err)
			}
		})
	}
}

// TestClockSkewIsCorrected: the probe compares the process clock with the
// apiserver's Date header; beyond skewTolerance the clock the allocator
// and the reconciler read is corrected, within it left alone, and the
// skew is exported.
func TestClockSkewIsCorrected(t *testing.T) {
	apiNow := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		offset   time.Duration
		corrects bool
	}{
		"an hour ahead":      {time.Hour, true},
		"ten minutes behind": {-10 * time.Minute, true},
		"a second ahead":     {time.Second, false},
		"in step":            {0, false},
	} {
		t.Run(name, func(t *testing.T) {
			srv := &fakeAPIServer{now: apiNow, status: http.StatusOK}
			local := clocktesting.NewFakeClock(apiNow)
			base := offsetClock{Clock: local, offset: tc.offset}
			reg := prometheus.NewRegistry()
			p, err := newAPIServerProbe(srv.get, base, zap.NewNop(), reg)
			if err != nil {
				t.Fatal(err)
			}
			if _, known := p.Skew(); known {
				t.Fatal("skew known before any probe")
			}
			p.probe(context.Background())
			skew, known := p.Skew()
			if !known {
				t.Fatal("skew unknown after a probe")
			}
			got := p.Clock().Now()
			if tc.corrects {
				// The Date header's one-second resolution.
				if d := got.Sub(apiNow); d < -time.Second || d > time.Second {
					t.Errorf("corrected clock %s, apiserver %s (skew %s)", got, apiNow, skew)
				}
			} else if skew != 0 || !got.Equal(base.Now()) {
				t.Errorf("within tolerance: skew %s, clock %s, want uncorrected %s", skew, got, base.Now())
			}
			var m dto.Metric
			if err := p.gauge.Write(&m); err != nil {
				t.Fatal(err)
			}
			if g := m.GetGauge().GetValue(); g < tc.offset.Seconds()-1.5 || g > tc.offset.Seconds()+1.5 {
				t.Errorf("dualstack_webhook_clock_skew_seconds = %g, want about %g", g, tc.offset.Seconds())
			}
		})
	}
}

// TestJumpedClockFreesNothingEarly is the point of the correction: a
// replica whose clock jumped an hour ahead (past the pending grace and the
// retention) collects, with the corrected clock, neither another replica's
// fresh pending reservation nor a sticky one; with the raw clock it frees
// both.
func TestJumpedClockFreesNothingEarly(t *testing.T) {
	apiNow := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for name, cidrs := range map[string]string{
		"IPv4": "10.96.0.0/16", "IPv6": "fd00:10:96::/108",
		"IPv4,IPv6": "10.96.0.0/16,fd00:10:96::/108", "IPv6,IPv4": "fd00:10:96::/108,10.96.0.0/16",
	} {
		t.Run(name, func(t *testing.T) {
			prefixes, err := alloc.ParseServiceCIDRs(cidrs)
			if err != nil {
				t.Fatal(err)
			}
			pools, err := alloc.Compile(nil, prefixes)
			if err != nil {
				t.Fatal(err)
			}
			fam := alloc.FamilyOf(prefixes[0].Addr())
			local := clocktesting.NewFakeClock(apiNow)
			st := memory.New()
			opts := alloc.Options{Clock: local, PendingGrace: 2 * time.Minute, Retention: 10 * time.Minute}
			sane, err := alloc.New(st, pools, opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			// A Service deleted a moment ago (sticky) and one being created
			// (pending), both recorded by a replica with a sane clock.
			gone, err := sane.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "shop", Name: "gone"}, Families: []corev1.IPFamily{fam}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sane.Confirm(ctx, gone.IPs[0], alloc.Owner{Namespace: "shop", Name: "gone", UID: "u1"}); err != nil {
				t.Fatal(err)
			}
			if err := sane.Release(ctx, gone.IPs[0], alloc.Owner{Namespace: "shop", Name: "gone", UID: "u1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := sane.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "shop", Name: "new"}, Families: []corev1.IPFamily{fam}}); err != nil {
				t.Fatal(err)
			}

			jumped := offsetClock{Clock: local, offset: time.Hour}
			srv := &fakeAPIServer{now: apiNow, status: http.StatusOK}
			p, err := newAPIServerProbe(srv.get, jumped, zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			p.probe(ctx)
			for _, c := range []struct {
				name  string
				clock clock.PassiveClock
				freed int
			}{{"corrected clock", p.Clock(), 0}, {"raw jumped clock", jumped, 2}} {
				o := opts
				o.Clock = c.clock
				a, err := alloc.New(st, pools, o)
				if err != nil {
					t.Fatal(err)
				}
				freed, err := a.CollectWith(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(freed) != c.freed {
					t.Errorf("%s: freed %v, want %d reservations freed", c.name, freed, c.freed)
				}
			}
		})
	}
}
