package framework

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestControlPlaneShapesAndControllerManager starts single-stack IPv6 and
// dual-stack IPv6-primary control planes (the latter with
// kube-controller-manager) and checks what the suites rely on: the default
// ServiceCIDR mirrors the flag, a plain Service gets the primary family, and
// — with the controller manager — a namespace deletion completes.
func TestControlPlaneShapesAndControllerManager(t *testing.T) {
	NeedPrereq(t, Prereq())
	if UseExistingCluster() {
		t.Skip("starts its own control planes")
	}
	tests := []struct {
		cidrs   string
		kcm     bool
		primary string
	}{
		{V6CIDRs, false, "IPv6"},
		{V6V4CIDRs, true, "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.cidrs, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			env, err := NewLocalEnv(ctx, "framework", ControlPlaneOptions{ServiceCIDRs: tt.cidrs, ControllerManager: tt.kcm})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := env.Close(t.Failed()); err != nil {
					t.Error(err)
				}
			}()
			var got []string
			for _, p := range env.ServiceCIDRs {
				got = append(got, p.String())
			}
			if want := tt.cidrs; strings.Join(got, ",") != want {
				t.Errorf("ServiceCIDR kubernetes = %v, want %s", got, want)
			}
			ns, err := Namespace(ctx, env.Client, "fw", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			sv := ProbeService()
			sv.Spec.IPFamilyPolicy, sv.Spec.IPFamilies = nil, nil
			created, err := env.Client.CoreV1().Services(ns).Create(ctx, sv, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if o := OutcomeOf(created, nil); len(o.IPFamilies) != 1 || o.IPFamilies[0] != tt.primary {
				t.Errorf("plain Service families %v, want [%s]", o.IPFamilies, tt.primary)
			}
			if !tt.kcm {
				return
			}
			if err := env.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if err != nil {
				t.Errorf("namespace %s not deleted by kube-controller-manager within a minute: %v (log %s/kube-controller-manager.log)",
					ns, err, env.Artifacts)
			}
		})
	}
}
