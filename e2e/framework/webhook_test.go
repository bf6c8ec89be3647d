package framework

import "testing"

func TestMetricSum(t *testing.T) {
	body := []byte(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
dualstack_webhook_pool_addresses{family="IPv4",pool="bulk",state="pending"} 3
dualstack_webhook_pool_addresses{family="IPv6",pool="bulk",state="pending"} 2
dualstack_webhook_pool_addresses{family="IPv6",pool="bulk",state="bound"} 9
dualstack_webhook_reconcile_syncs_total 1.5e+06
`)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
		found  bool
	}{
		{"go_goroutines", nil, 42, true},
		{"dualstack_webhook_pool_addresses", map[string]string{"state": "pending"}, 5, true},
		{"dualstack_webhook_pool_addresses", map[string]string{"state": "pending", "family": "IPv6"}, 2, true},
		{"dualstack_webhook_pool_addresses", nil, 14, true},
		{"dualstack_webhook_pool_addresses", map[string]string{"state": "sticky"}, 0, false},
		{"dualstack_webhook_reconcile_syncs_total", nil, 1.5e6, true},
		{"go_gor", nil, 0, false},
	} {
		got, found := MetricSum(body, c.name, c.labels)
		if got != c.want || found != c.found {
			t.Errorf("MetricSum(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, found, c.want, c.found)
		}
	}
}
