package framework

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NewService is the suites' test Service (selector app=MyApp, TCP 80) with
// the given labels (nil: none) and mutations applied in order.
func NewService(name string, labels map[string]string, mut ...func(*corev1.Service)) *corev1.Service {
	if labels == nil {
		labels = map[string]string{}
	}
	sv := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "MyApp"},
			Ports:    []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mut {
		m(sv)
	}
	return sv
}

// WithPolicy sets spec.ipFamilyPolicy.
func WithPolicy(p corev1.IPFamilyPolicy) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &p }
}

// WithFamilies sets spec.ipFamilies.
func WithFamilies(fs ...corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.IPFamilies = fs }
}

// WithClusterIPs sets spec.clusterIPs and spec.clusterIP (the first, if any).
func WithClusterIPs(ips ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		s.Spec.ClusterIPs = ips
	}
}
