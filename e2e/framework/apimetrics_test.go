package framework

import (
	"math"
	"testing"
	"time"
)

const metricsText = `# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution in seconds.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.005"} 0
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.025"} 6
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.05"} 8
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="+Inf"} 10
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="All",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.005"} 2
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="All",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.025"} 2
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="All",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.05"} 2
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="All",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="+Inf"} 2
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1",le="0.005"} 100
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1",le="+Inf"} 100
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 0.3
`

func TestParseHistogram(t *testing.T) {
	match := map[string]string{"resource": "configmaps", "verb": "POST"}
	h, err := parseHistogram([]byte(metricsText), "apiserver_request_duration_seconds", match)
	if err != nil {
		t.Fatal(err)
	}
	// Both dry_run series summed; the services series left out.
	if got := h.Count(); got != 12 {
		t.Fatalf("count %d, want 12", got)
	}
	// rank 6 of 12: bucket (5ms, 25ms] holds ranks 3..8 (cumulative 2 -> 8): 5 + 20*(6-2)/6 ms.
	if got, want := h.Quantile(0.5), 5*time.Millisecond+20*time.Millisecond*4/6; got.Round(time.Microsecond) != want.Round(time.Microsecond) {
		t.Errorf("p50 %s, want %s", got, want)
	}
	// Past the last finite bound: that bound.
	if got := h.Quantile(0.99); got != 50*time.Millisecond {
		t.Errorf("p99 %s, want 50ms", got)
	}
	prev, err := parseHistogram([]byte(metricsText), "apiserver_request_duration_seconds", map[string]string{"resource": "configmaps", "verb": "POST", "dry_run": "All"})
	if err != nil {
		t.Fatal(err)
	}
	d := h.Sub(prev)
	if d.Count() != 10 || d.Quantile(0.1) != 5*time.Millisecond+20*time.Millisecond/6 {
		t.Errorf("delta: count %d p10 %s", d.Count(), d.Quantile(0.1))
	}
	if (Histogram{}).Quantile(0.5) != 0 {
		t.Error("empty histogram: want 0")
	}
	if _, err := parseHistogram([]byte(`x_bucket{le="0.1" 3`), "x", nil); err == nil {
		t.Error("malformed labels: want an error")
	}
}

// TestHistogramQuantile checks the quantile arithmetic on a known histogram.
func TestHistogramQuantile(t *testing.T) {
	h := Histogram{Bounds: []float64{0.005, 0.025, 0.1, math.Inf(1)}, Counts: []float64{50, 90, 100, 100}}
	if got := h.Quantile(0.5); got != 5*time.Millisecond {
		t.Errorf("p50 = %s, want 5ms", got)
	}
	if got := h.Quantile(0.7); got != 15*time.Millisecond {
		t.Errorf("p70 = %s, want 15ms (halfway through the 5-25ms bucket)", got)
	}
	if got := h.Quantile(0.99); got.Round(time.Millisecond) != 93*time.Millisecond {
		t.Errorf("p99 = %s, want 92.5ms", got)
	}
	if got := h.FiniteBounds(); len(got) != 3 || got[2] != 0.1 {
		t.Errorf("finite bounds %v", got)
	}
}
