package allocstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// baseline holds the apiserver's own Service create rate measured earlier in
// the same run, per concurrency, so each ConfigMap figure is reported as a
// ratio against the same machine at the same moment.
var baseline sync.Map // int (concurrency) → float64 (creates/s)

const benchPool = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: bench
pools:
- name: bench
  addresses: {ipv4: ["10.96.32.0-10.96.63.255"]}
`

// BenchmarkReservations: ConfigMap-backed reservations per second against
// the real apiserver with 1 and 3 concurrent allocators (each its own
// clientset, informer and store, one request in flight each, like replicas
// each serving one admission at a time), beside the apiserver creating
// plain ClusterIP Services (its own allocation: one IPAddress + one Service
// write) at the same concurrency.
func BenchmarkReservations(b *testing.B) {
	suite.Need(b)
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("service-create/clients=%d", n), func(b *testing.B) { benchServices(b, n) })
		b.Run(fmt.Sprintf("configmap/allocators=%d", n), func(b *testing.B) { benchConfigMaps(b, n) })
	}
}

// split runs fn(i) for i in [0, b.N) over n goroutines and returns the rate.
func split(b *testing.B, n int, fn func(worker, i int) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := range n {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := fn(w, i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return float64(b.N) / elapsed.Seconds()
}

func benchServices(b *testing.B, n int) {
	ns := namespace(b, "bench-svc")
	clients := make([]kubernetes.Interface, n)
	for i := range clients {
		cfg := configmap.RaiseRateLimits(suite.CP.Config)
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	rate := split(b, n, func(w, i int) error {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d-%d", b.N, i)},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}
		_, err := clients[w].CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
		return err
	})
	baseline.Store(n, rate)
	b.ReportMetric(rate, "creates/s")
}

func benchConfigMaps(b *testing.B, n int) {
	ns := namespace(b, "bench-cm")
	pools := compile(b, benchPool)
	allocs := make([]*alloc.Allocator, n)
	for i := range allocs {
		a, err := alloc.New(newStore(b, ns), pools, alloc.Options{})
		if err != nil {
			b.Fatal(err)
		}
		allocs[i] = a
	}
	fams := []corev1.IPFamily{corev1.IPv4Protocol}
	rate := split(b, n, func(w, i int) error {
		_, err := allocs[w].Reserve(context.Background(), alloc.Request{
			Owner: alloc.Owner{Namespace: "apps", Name: fmt.Sprintf("s-%d-%d", b.N, i)}, Families: fams})
		return err
	})
	b.ReportMetric(rate, "reservations/s")
	if base, ok := baseline.Load(n); ok {
		b.ReportMetric(rate/base.(float64), "x-service-create")
	}
}
