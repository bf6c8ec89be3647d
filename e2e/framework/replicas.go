package framework

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ReplicaSetOptions shape StartReplicaSet.
type ReplicaSetOptions struct {
	// Name names the artifacts folder and is the scope label value of the
	// registration (namespaces labelled ScopeLabel=Name are served).
	Name string
	// Replicas is the number of webhook processes.
	Replicas int
	// StateNS is their --namespace, where the pools ConfigMap and the
	// reservations live.
	StateNS string
	// PoolsDoc is the pools.yaml of the ConfigMap dualstack-webhook-pools
	// (the default --pools-configmap); empty creates none.
	PoolsDoc string
	// Args are extra serve flags of every replica (e.g. leader election,
	// grace periods).
	Args []string
	// Env is added to every replica's environment (e.g. GOMEMLIMIT, as
	// the chart sets it).
	Env []string
}

// ReplicaSet is a control plane with n webhook processes sharing one state
// namespace and one pools ConfigMap, registered once behind a round-robin
// proxy (the test's Service in front of the pods).
type ReplicaSet struct {
	Env   *Env
	Hooks []*Webhook
	Proxy *RRProxy
	// Scope is the ScopeLabel value of the served namespaces.
	Scope   string
	StateNS string
	// Opts is how each replica was started (to restart one alike).
	Opts []WebhookOptions
	// Keep keeps the logs (and profiles) even when the test passes.
	Keep bool
}

// StartReplicaSet brings up a ReplicaSet on its own control plane; it all
// stops when the test ends, logs kept if it failed.
func StartReplicaSet(t testing.TB, o ReplicaSetOptions) *ReplicaSet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	env, err := NewLocalEnv(ctx, o.Name, ControlPlaneOptions{ServiceCIDRs: DualStackCIDRs})
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	rs := &ReplicaSet{Env: env, Scope: o.Name, StateNS: o.StateNS}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, w := range rs.Hooks {
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.Stop() }()
		}
		wg.Wait()
		if err := env.Close(t.Failed() || rs.Keep); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	c := env.Client
	if err := EnsureNamespace(ctx, c, o.StateNS, nil); err != nil {
		t.Fatal(err)
	}
	if o.PoolsDoc != "" {
		if _, err := c.CoreV1().ConfigMaps(o.StateNS).Create(ctx, PoolsConfigMap(o.StateNS, "dualstack-webhook-pools", o.PoolsDoc), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range o.Replicas {
		wo := WebhookOptions{
			Binary: bin, Name: fmt.Sprintf("replica-%d", i), Dir: env.Artifacts, Kubeconfig: env.Kubeconfig,
			ServiceCIDRs: DualStackCIDRs, Namespace: o.StateNS, ExtraArgs: o.Args, Env: o.Env,
		}
		w, err := StartWebhook(ctx, wo)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		rs.Hooks = append(rs.Hooks, w)
		rs.Opts = append(rs.Opts, wo)
	}
	rs.Proxy = NewRRProxy(t, rs.Hooks)
	RegisterServices(t, c, o.Name, rs.Proxy.URL(), rs.Proxy.CABundle())
	t.Logf("%d replicas behind %s ready in %s (logs in %s)", o.Replicas, rs.Proxy.URL(), time.Since(start).Round(time.Millisecond), env.Artifacts)
	return rs
}

// EnsureNamespace creates a namespace with a fixed name unless it exists.
func EnsureNamespace(ctx context.Context, c kubernetes.Interface, name string, labels map[string]string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// RegisterServices registers base (/mutate, /validate) for Services in
// namespaces labelled ScopeLabel=name and waits until it is effective.
func RegisterServices(t testing.TB, c kubernetes.Interface, name, base string, ca []byte) Registration {
	t.Helper()
	ctx := context.Background()
	reg := Registration{Name: name, URL: base, CABundle: ca}
	if err := Register(ctx, c, reg); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	t.Cleanup(func() { _ = Unregister(context.Background(), c, reg) })
	ns, err := Namespace(ctx, c, "probe-"+name, map[string]string{ScopeLabel: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitEffective(ctx, c, ns, reg.MutatingName(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return reg
}

// PoolsConfigMap is a pools ConfigMap as the chart's guard selects it.
func PoolsConfigMap(ns, name, doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"dualstack-webhook.io/pools": "true"}},
		Data:       map[string]string{"pools.yaml": doc},
	}
}

// The bulk pool several suites share: larger than the static band (256
// addresses per family), since their loads hold hundreds of Services.
var (
	bulkFirst4, bulkLast4 = netip.MustParseAddr("10.96.16.0"), netip.MustParseAddr("10.96.23.255")
	bulkFirst6, bulkLast6 = netip.MustParseAddr("fd00:10:96::1000"), netip.MustParseAddr("fd00:10:96::17ff")
	// BulkPoolRanges names the bulk pool's addresses, for messages.
	BulkPoolRanges = bulkFirst4.String() + "-" + bulkLast4.String() + ", " + bulkFirst6.String() + "-" + bulkLast6.String()
)

// BulkPoolsDoc is a pools.yaml whose only pool, name, is the bulk pool and
// the default pool.
func BulkPoolsDoc(name string) string {
	return fmt.Sprintf(`apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: %[1]s
pools:
- name: %[1]s
  addresses:
    ipv4: ["10.96.16.0/21"]
    ipv6: ["%[2]s-%[3]s"]
`, name, bulkFirst6, bulkLast6)
}

// InBulkPool reports whether a is an address of the bulk pool.
func InBulkPool(a netip.Addr) bool {
	in := func(first, last netip.Addr) bool {
		return a.BitLen() == first.BitLen() && a.Compare(first) >= 0 && a.Compare(last) <= 0
	}
	return in(bulkFirst4, bulkLast4) || in(bulkFirst6, bulkLast6)
}
