package framework

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// PrereqOwnControlPlane is Prereq for a package that must run its own
// control planes: on top of Prereq's checks it refuses
// E2E_USE_EXISTING_CLUSTER, with reason as the message its tests skip (or
// fail, under E2E_REQUIRED) with.
func PrereqOwnControlPlane(reason string) error {
	return refuseExisting(Prereq(), reason)
}

func refuseExisting(err error, reason string) error {
	if err == nil && UseExistingCluster() {
		return fmt.Errorf("%w: %s", ErrPrereq, reason)
	}
	return err
}

// Suite is the TestMain scaffolding of a package whose tests share one local
// control plane, started before the tests run and stopped after them:
//
//	var suite = &framework.Suite{Name: "…", NeedsOwnControlPlane: "…", Options: …}
//	func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }
//
// and every test that talks to the control plane starts with suite.Need(t).
type Suite struct {
	// Name prefixes the messages TestMain prints (e.g. "allocstore").
	Name string
	// NeedsOwnControlPlane is why the package refuses
	// E2E_USE_EXISTING_CLUSTER: its tests skip (fail under E2E_REQUIRED)
	// with this reason.
	NeedsOwnControlPlane string
	// Options are those of the control plane.
	Options ControlPlaneOptions
	// Prereq, if set, is a further prerequisite checked after Prereq and
	// before the existing-cluster refusal (e.g. a helm binary); its error is
	// wrapped in ErrPrereq.
	Prereq func() error
	// Setup, if set, runs on the fresh control plane (e.g. installing CRDs);
	// its error fails every test that calls Need.
	Setup func(*ControlPlane) error

	// CP is the control plane, set by Main (nil when it could not start).
	CP *ControlPlane

	prereqErr error // nil when the suite can run here
	setupErr  error // set when the control plane could not be brought up
}

// Main starts the control plane (unless a prerequisite is missing), runs the
// tests, stops the control plane and returns the exit code for os.Exit.
func (s *Suite) Main(m *testing.M) int {
	s.prereqErr = Prereq()
	if s.prereqErr == nil && s.Prereq != nil {
		if err := s.Prereq(); err != nil {
			s.prereqErr = fmt.Errorf("%w: %v", ErrPrereq, err)
		}
	}
	s.prereqErr = refuseExisting(s.prereqErr, s.NeedsOwnControlPlane)
	if s.prereqErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		s.CP, s.setupErr = StartControlPlane(ctx, s.Options)
		if s.setupErr == nil && s.Setup != nil {
			s.setupErr = s.Setup(s.CP)
		}
		cancel()
	}
	code := m.Run()
	if s.CP != nil {
		if err := s.CP.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, s.Name+": stopping control plane:", err)
		}
	}
	return code
}

// Need skips the test, or fails it under E2E_REQUIRED, when a prerequisite
// is missing, and fails it when the control plane could not be brought up.
func (s *Suite) Need(tb testing.TB) {
	tb.Helper()
	NeedPrereq(tb, s.prereqErr)
	if s.setupErr != nil {
		tb.Fatalf("control plane: %v", s.setupErr)
	}
}
