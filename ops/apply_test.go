package ops

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

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

// createServed retries a create refused because kube-apiserver's allocators
// do not serve a Ready ServiceCIDR yet, and only then: the same refusal for
// an address outside every Ready ServiceCIDR, or another refusal, is
// returned at once.
func TestCreateServed(t *testing.T) {
	notServed := apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, "s", field.ErrorList{field.Invalid(field.NewPath("spec", "clusterIPs"), []string{"10.100.0.10"}, "failed to allocate IP 10.100.0.10: the provided network does not match the current range")})
	taken := apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, "s", field.ErrorList{field.Invalid(field.NewPath("spec", "clusterIPs"), []string{"10.100.0.10"}, "failed to allocate IP 10.100.0.10: provided IP is already allocated")})
	readySC := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "new"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.100.0.0/20"}},
		Status: networkingv1.ServiceCIDRStatus{Conditions: []metav1.Condition{{Type: networkingv1.ServiceCIDRConditionReady, Status: metav1.ConditionTrue}}}}
	for _, tc := range []struct {
		name      string
		ip        string
		refusals  []error
		wantCalls int
		wantErr   bool
	}{
		{"catches up after two refusals", "10.100.0.10", []error{notServed, notServed}, 3, false},
		{"outside every Ready ServiceCIDR: no retry", "10.101.0.10", []error{notServed, notServed}, 1, true},
		{"already allocated: no retry", "10.100.0.10", []error{taken}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := fake.NewClientset(readySC)
			calls := 0
			cl.PrependReactor("create", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
				calls++
				if calls <= len(tc.refusals) {
					return true, nil, tc.refusals[calls-1]
				}
				return false, nil, nil
			})
			a := &Applier{Client: cl, Namespace: "dsw", Timeout: 10 * time.Second}
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "s"}, Spec: corev1.ServiceSpec{ClusterIP: tc.ip, ClusterIPs: []string{tc.ip}}}
			_, err := a.createServed(context.Background(), svc)
			if (err != nil) != tc.wantErr || calls != tc.wantCalls {
				t.Errorf("err=%v calls=%d, want err=%v calls=%d", err, calls, tc.wantErr, tc.wantCalls)
			}
		})
	}
}
