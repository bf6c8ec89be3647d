package serve

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

// --events=warnings keeps the Warnings (a pool not applied, an address
// taken over) and drops the Normal per-Service ones, whichever method the
// caller uses.
func TestWarningsOnlyRecorder(t *testing.T) {
	fake := record.NewFakeRecorder(10)
	r := warningsOnly{fake}
	svc := &corev1.Service{}
	r.Event(svc, corev1.EventTypeNormal, "ClusterIPPinned", "dropped")
	r.Eventf(svc, corev1.EventTypeNormal, "ReservationImported", "dropped %d", 1)
	r.AnnotatedEventf(svc, nil, corev1.EventTypeNormal, "ReservationReleased", "dropped %d", 2)
	r.Event(svc, corev1.EventTypeWarning, "PoolsNotApplied", "kept")
	r.Eventf(svc, corev1.EventTypeWarning, "ReservationTakenOver", "kept %d", 1)
	r.AnnotatedEventf(svc, nil, corev1.EventTypeWarning, "ReservationTakenOver", "kept %d", 2)
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	want := []string{"Warning PoolsNotApplied kept", "Warning ReservationTakenOver kept 1", "Warning ReservationTakenOver kept 2"}
	if len(got) != len(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %q, want %q", i, got[i], want[i])
		}
	}
}
