package ops

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

func svc(ns, name string, families []corev1.IPFamily, ips ...string) corev1.Service {
	s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: "uid-" + "name"}}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.IPFamilies = families
	if len(ips) > 0 {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips
	}
	pol := corev1.IPFamilyPolicySingleStack
	if len(families) == 2 {
		pol = corev1.IPFamilyPolicyPreferDualStack
	}
	s.Spec.IPFamilyPolicy = &pol
	s.Spec.Ports = []corev1.ServicePort{{Port: 80}}
	return s
}

var (
	v4   = []corev1.IPFamily{corev1.IPv4Protocol}
	v6   = []corev1.IPFamily{corev1.IPv6Protocol}
	v4v6 = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	v6v4 = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
)

func scidr(name string, cidrs ...string) networkingv1.ServiceCIDR {
	return networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}
}

func parseDoc(t *testing.T, doc string) *alloc.PoolConfig {
	t.Helper()
	if doc == "" {
		return &alloc.PoolConfig{APIVersion: alloc.ConfigAPIVersion, Kind: alloc.ConfigKind}
	}
	c, err := alloc.ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func res(ip, pool string, st alloc.State, ns, name string) alloc.Reservation {
	return alloc.Reservation{IP: netip.MustParseAddr(ip), Pool: pool, State: st, Owner: alloc.Owner{Namespace: ns, Name: name}}
}
