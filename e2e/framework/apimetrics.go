package framework

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Histogram is one Prometheus histogram of the apiserver's /metrics,
// summed over every series whose labels include a match: cumulative
// counts per upper bound, as exposed.
type Histogram struct {
	Bounds []float64 // upper bounds in seconds, ascending, +Inf last
	Counts []float64 // cumulative
}

// APIServerHistogram reads the histogram name (without _bucket) from the
// apiserver's /metrics, summing the series whose labels include every pair
// of match: e.g. apiserver_request_duration_seconds for resource
// configmaps and verb POST, whatever the scope or dry-run label. It lets a
// benchmark tell the apiserver's own time from the webhook's.
func APIServerHistogram(ctx context.Context, c kubernetes.Interface, name string, match map[string]string) (Histogram, error) {
	body, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return Histogram{}, fmt.Errorf("apiserver /metrics: %w", err)
	}
	return parseHistogram(body, name, match)
}

// WebhookHistogram is APIServerHistogram for the webhook replicas' own
// /metrics, summed over the replicas that run.
func WebhookHistogram(hooks []*Webhook, name string, match map[string]string) (Histogram, error) {
	var sum Histogram
	for _, w := range hooks {
		if !w.Running() {
			continue
		}
		code, body, err := w.Metrics()
		if err != nil || code != 200 {
			return Histogram{}, fmt.Errorf("%s/metrics: HTTP %d %v", w.MetricsURL, code, err)
		}
		h, err := parseHistogram(body, name, match)
		if err != nil {
			return Histogram{}, err
		}
		sum = sum.add(h)
	}
	return sum, nil
}

// add sums two histograms of the same buckets (either may be empty).
func (h Histogram) add(o Histogram) Histogram {
	if len(h.Bounds) == 0 {
		return o
	}
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts)}
	for i, b := range h.Bounds {
		if j := slices.Index(o.Bounds, b); j >= 0 {
			out.Counts[i] += o.Counts[j]
		}
	}
	return out
}

func parseHistogram(body []byte, name string, match map[string]string) (Histogram, error) {
	sums := map[float64]float64{}
	prefix := name + "_bucket{"
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		labels, rest, ok := cutLabels(line)
		if !ok {
			return Histogram{}, fmt.Errorf("%s: malformed line %q", name, sc.Text())
		}
		if !matches(labels, match) {
			continue
		}
		le, err := strconv.ParseFloat(labels["le"], 64)
		if err != nil {
			return Histogram{}, fmt.Errorf("%s: bucket bound %q: %w", name, labels["le"], err)
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return Histogram{}, fmt.Errorf("%s: no value in %q", name, sc.Text())
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return Histogram{}, fmt.Errorf("%s: value %q: %w", name, fields[0], err)
		}
		sums[le] += v
	}
	if err := sc.Err(); err != nil {
		return Histogram{}, err
	}
	var h Histogram
	for b := range sums {
		h.Bounds = append(h.Bounds, b)
	}
	slices.Sort(h.Bounds)
	for _, b := range h.Bounds {
		h.Counts = append(h.Counts, sums[b])
	}
	return h, nil
}

// cutLabels parses `k="v",k2="v2"} rest` (values may hold escaped quotes).
func cutLabels(s string) (map[string]string, string, bool) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, ", ")
		if rest, ok := strings.CutPrefix(s, "}"); ok {
			return labels, rest, true
		}
		eq := strings.Index(s, `="`)
		if eq <= 0 {
			return nil, "", false
		}
		key := s[:eq]
		s = s[eq+2:]
		var val strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			val.WriteByte(s[i])
		}
		if i == len(s) {
			return nil, "", false
		}
		labels[key] = val.String()
		s = s[i+1:]
	}
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Sub is what was observed between prev and h (both of the same series).
func (h Histogram) Sub(prev Histogram) Histogram {
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts)}
	for i, b := range h.Bounds {
		if j := slices.Index(prev.Bounds, b); j >= 0 {
			out.Counts[i] -= prev.Counts[j]
		}
	}
	return out
}

// FiniteBounds are the bucket bounds without +Inf.
func (h Histogram) FiniteBounds() []float64 {
	return slices.DeleteFunc(slices.Clone(h.Bounds), func(b float64) bool { return math.IsInf(b, 1) })
}

// Count is the number of observations.
func (h Histogram) Count() int {
	if len(h.Counts) == 0 {
		return 0
	}
	return int(h.Counts[len(h.Counts)-1])
}

// Quantile estimates the q-quantile the way Prometheus' histogram_quantile
// does: linear within the bucket it falls in (the bucket bounds make it
// coarse: the apiserver's are 5, 25, 50, 100, 200, 400, 600 ms, ...). Zero
// without observations; the highest finite bound when it falls in +Inf.
func (h Histogram) Quantile(q float64) time.Duration {
	n := len(h.Counts)
	if n == 0 || h.Counts[n-1] <= 0 {
		return 0
	}
	rank := q * h.Counts[n-1]
	lower, below := 0.0, 0.0
	for i, b := range h.Bounds {
		if h.Counts[i] >= rank {
			if math.IsInf(b, 1) {
				return seconds(lower)
			}
			inBucket := h.Counts[i] - below
			if inBucket <= 0 {
				return seconds(b)
			}
			return seconds(lower + (b-lower)*(rank-below)/inBucket)
		}
		lower, below = b, h.Counts[i]
	}
	return seconds(lower)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
