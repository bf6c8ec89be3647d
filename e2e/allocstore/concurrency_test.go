package allocstore

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

const (
	replicas    = 3
	perReplica  = 100
	workersEach = 4 // concurrent admissions inside one replica
)

// TestReplicasNeverDuplicate: three allocators, each with its own clientset,
// informer and store (as three webhook replicas), reserve 3 × 100 dual-stack
// Services at the same time from one pool, in both family orders. The
// apiserver's AlreadyExists is the only thing they share. Every address
// handed out must be unique, and the ConfigMap of each must name the Service
// it was handed to.
func TestReplicasNeverDuplicate(t *testing.T) {
	suite.Need(t)
	for _, strategy := range []alloc.Strategy{alloc.StrategyLowest, alloc.StrategyHash} {
		t.Run(string(strategy), func(t *testing.T) {
			ns := namespace(t, "replicas-"+string(strategy))
			// 400 addresses per family for 300 Services: the last ones
			// are handed out while the pool is nearly full.
			pools := compile(t, fmt.Sprintf(`
apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: shared
pools:
- name: shared
  strategy: %s
  addresses:
    ipv4: ["10.96.1.0/24", "10.96.2.0-10.96.2.143"]
    ipv6: ["fd00:10:96::1:0-fd00:10:96::1:18f"]
`, strategy))
			type grant struct {
				owner string
				ips   []netip.Addr
			}
			var (
				mu     sync.Mutex
				grants []grant
				errs   []error
			)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for r := range replicas {
				a, err := alloc.New(newStore(t, ns), pools, alloc.Options{})
				if err != nil {
					t.Fatal(err)
				}
				fams := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
				if r%2 == 1 {
					fams = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
				}
				for w := range workersEach {
					wg.Go(func() {
						<-start
						for i := w; i < perReplica; i += workersEach {
							owner := alloc.Owner{Namespace: "apps", Name: fmt.Sprintf("svc-r%d-%03d", r, i), RequestUID: fmt.Sprintf("req-%d-%d", r, i)}
							ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
							res, err := a.Reserve(ctx, alloc.Request{Owner: owner, Families: fams})
							cancel()
							mu.Lock()
							if err != nil {
								errs = append(errs, fmt.Errorf("%s: %w", owner, err))
							} else {
								grants = append(grants, grant{owner.Key(), res.IPs})
							}
							mu.Unlock()
						}
					})
				}
			}
			began := time.Now()
			close(start)
			wg.Wait()
			elapsed := time.Since(began)
			for _, err := range errs {
				t.Error(err)
			}
			if len(grants) != replicas*perReplica {
				t.Fatalf("%d grants, want %d", len(grants), replicas*perReplica)
			}
			holder := map[netip.Addr]string{}
			dups := 0
			for _, g := range grants {
				if len(g.ips) != 2 || g.ips[0].Is4() == g.ips[1].Is4() {
					t.Errorf("%s got %v, want one address per family", g.owner, g.ips)
				}
				for _, ip := range g.ips {
					if prev, ok := holder[ip]; ok {
						dups++
						t.Errorf("DUPLICATE: %s handed to %s and %s", ip, prev, g.owner)
					}
					holder[ip] = g.owner
				}
			}
			// Ground truth from the apiserver, not from any cache.
			list, err := suite.CP.Client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: configmap.Selector})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != len(holder) {
				t.Errorf("%d reservation ConfigMaps, %d addresses handed out", len(list.Items), len(holder))
			}
			for _, cm := range list.Items {
				ip, err := netip.ParseAddr(cm.Data["ip"])
				if err != nil {
					t.Errorf("ConfigMap %s: %v", cm.Name, err)
					continue
				}
				if want := holder[ip]; want != cm.Data["namespace"]+"/"+cm.Data["name"] {
					t.Errorf("ConfigMap %s names %s/%s, but the address was handed to %q", cm.Name, cm.Data["namespace"], cm.Data["name"], want)
				}
				if !pools.Default.Addresses.Contains(ip) {
					t.Errorf("%s is outside the pool", ip)
				}
			}
			t.Logf("%s: %d replicas × %d dual-stack Services = %d addresses in %s, %d duplicates, %d ConfigMaps",
				strategy, replicas, perReplica, len(holder), elapsed.Round(time.Millisecond), dups, len(list.Items))
		})
	}
}
