package ops

import (
	"context"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// freeOld deletes only the reservations of the re-created Service's old
// addresses, never another owner's, nor unmanaged ConfigMaps.
func TestFreeOld(t *testing.T) {
	cm := func(ip, ns, name string, managed bool) *corev1.ConfigMap {
		c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: configmap.Name(netip.MustParseAddr(ip)), Namespace: "dsw", ResourceVersion: "1"},
			Data: map[string]string{"ip": ip, "namespace": ns, "name": name}}
		if managed {
			c.Labels = map[string]string{configmap.LabelManagedBy: configmap.ManagedBy}
		}
		return c
	}
	cl := fake.NewClientset(
		cm("10.96.0.10", "a", "web", true),     // web's old primary: freed
		cm("fd00:10:96::10", "a", "web", true), // web's secondary, kept by the new Service: kept
		cm("10.96.0.11", "a", "other", true),   // another owner: kept
		cm("10.96.0.12", "a", "web", false),    // not ours: kept
		cm("10.97.0.10", "a", "web", true),     // outside the old range: kept
	)
	a := &Applier{Client: cl, Namespace: "dsw"}
	created := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.100.0.10", "fd00:10:96::10"}}}
	old := netip.MustParsePrefix("10.96.0.0/16")
	err := a.freeOld(context.Background(), old, ServiceChange{Namespace: "a", Name: "web"},
		[]string{"10.96.0.10", "fd00:10:96::10", "10.96.0.11", "10.96.0.12", "10.97.0.10"}, created)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := cl.CoreV1().ConfigMaps("dsw").List(context.Background(), metav1.ListOptions{})
	left := map[string]bool{}
	for _, c := range l.Items {
		left[c.Data["ip"]] = true
	}
	if left["10.96.0.10"] || !left["fd00:10:96::10"] || !left["10.96.0.11"] || !left["10.96.0.12"] || !left["10.97.0.10"] {
		t.Errorf("left: %v", left)
	}
}
