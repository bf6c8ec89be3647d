package faults

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// TestControlPlaneRestarts restarts, under load, kube-apiserver (SIGTERM,
// then SIGKILL) and etcd (SIGKILL), each on the same ports and data, one
// after the other in one cluster. Requests fail while the component is
// down — that is the apiserver's availability, not the webhook's — but
// once it is back every request succeeds again (recovery bounded), nothing
// is handed out twice, and after the reconciler's pass no reservation is
// leaked or lost.
func TestControlPlaneRestarts(t *testing.T) {
	long(t)
	cl := startCluster(t, "restarts", clusterOptions{})
	namespaces := cl.namespaces(t, cl.scope, "load", 3)
	var rows []row
	for i, f := range []struct {
		name      string
		component string
		sig       syscall.Signal
	}{
		{"kube-apiserver restarted (SIGTERM)", framework.KubeAPIServer, syscall.SIGTERM},
		{"kube-apiserver restarted (SIGKILL)", framework.KubeAPIServer, syscall.SIGKILL},
		{"etcd restarted (SIGKILL)", framework.Etcd, syscall.SIGKILL},
	} {
		l := startLoad(cl.c, namespaces, 4, fmt.Sprintf("p%dw", i))
		time.Sleep(5 * time.Second)
		tFault := time.Now()
		down, err := cl.env.ControlPlane.Restart(context.Background(), f.component, f.sig)
		if err != nil {
			l.halt()
			t.Fatalf("%s: %v", f.name, err)
		}
		// Long enough for the informers to re-list and the webhooks'
		// probes to see the apiserver again.
		time.Sleep(10 * time.Second)
		tTail := time.Now()
		time.Sleep(5 * time.Second)
		ops := l.halt()
		l.exemptWindow(tFault, tTail)
		r := tally(f.name, ops, tFault, time.Time{})
		r.notes = append(r.notes, fmt.Sprintf("%s down %s", f.component, down.Round(100*time.Millisecond)))
		r.notes = append(r.notes, cl.env.ControlPlane.Forced...)
		cl.env.ControlPlane.Forced = nil
		if tail := tally("tail", ops, tTail, time.Time{}); tail.failed > 0 || tail.total == 0 {
			t.Errorf("%s: %d of %d requests still failed 10s after %s was back: %v", f.name, tail.failed, tail.total, f.component, tail.messages)
		}
		settle(t, cl.c, l, &r, 60*time.Second)
		r.notes = append(r.notes, fmt.Sprintf("%g reservations re-imported", imported(t, cl)))
		rows = append(rows, r)
		report(t, r)
	}
	report(t, rows...)
}
