package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// TestReviewDeadlineLeavesAMargin: the review's deadline is the apiserver's
// ?timeout= minus a tenth (200 ms to 1 s), capped at 30 s, so the answer
// to a review cut short still reaches the apiserver before it gives up.
func TestReviewDeadlineLeavesAMargin(t *testing.T) {
	for query, want := range map[string]time.Duration{
		"timeout=10s": 9 * time.Second,
		"timeout=1s":  800 * time.Millisecond,
		"timeout=5s":  4500 * time.Millisecond,
		"timeout=30s": 29 * time.Second,
		"timeout=45s": 29 * time.Second, // capped at the 30 s maximum first
	} {
		t.Run(query, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mutate?"+query, nil)
			before := time.Now()
			ctx, cancel := requestContext(r)
			after := time.Now()
			defer cancel()
			dl, ok := ctx.Deadline()
			if !ok {
				t.Fatal("no deadline")
			}
			if dl.Before(before.Add(want)) || dl.After(after.Add(want)) {
				t.Errorf("deadline %s after the request, want %s", dl.Sub(before), want)
			}
		})
	}
	for _, query := range []string{"", "timeout=", "timeout=soon", "timeout=-3s"} {
		r := httptest.NewRequest(http.MethodPost, "/mutate?"+query, nil)
		ctx, cancel := requestContext(r)
		if _, ok := ctx.Deadline(); ok {
			t.Errorf("?%s: deadline set, want the request's own", query)
		}
		cancel()
	}
}

// slowAllocator is the allocator of a replica whose apiserver does not
// answer: every call that would reach the store waits until its context
// ends and fails the way client-go does.
type slowAllocator struct {
	*alloc.Allocator
	calls atomic.Int64
}

func (s *slowAllocator) Reserve(ctx context.Context, _ alloc.Request) (alloc.Result, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return alloc.Result{}, fmt.Errorf("creating ConfigMap dualstack-webhook/ip-10-96-0-1: %w", ctx.Err())
}

func (s *slowAllocator) Check(ctx context.Context, _ netip.Addr, _ alloc.Request) error {
	s.calls.Add(1)
	<-ctx.Done()
	return fmt.Errorf("reading ConfigMap: %w", ctx.Err())
}

// TestSlowApiserverAnsweredWithinTheTimeout: a reservation held by a slow
// apiserver is abandoned at the review's own deadline, and the answer
// says why (a 500, so failurePolicy decides) instead of the bare "context
// deadline exceeded" the apiserver would report after its own timeout.
func TestSlowApiserverAnsweredWithinTheTimeout(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			pe := newPinEnv(t, c, "")
			slow := &slowAllocator{Allocator: pe.alloc}
			e := newEnv(t, Options{Families: pe.fams, Allocator: slow})
			body := reviewSpec{object: svc("web", selector)}.JSON()
			_, resp := e.review("/mutate?timeout=1s", body)
			wantErrored(t, resp, http.StatusInternalServerError, "no answer from the apiserver within 800ms")
			for _, part := range []string{"before its timeoutSeconds (1s)", "context deadline exceeded"} {
				if !strings.Contains(resp.Result.Message, part) {
					t.Errorf("message %q lacks %q", resp.Result.Message, part)
				}
			}
			// /validate of a Service that brings its own address.
			body = reviewSpec{object: svc("own", selector+`,"clusterIP":"`+lowest[pe.fams[0]]+`","clusterIPs":["`+lowest[pe.fams[0]]+`"]`)}.JSON()
			_, resp = e.review("/validate?timeout=1s", body)
			wantErrored(t, resp, http.StatusInternalServerError, "no answer from the apiserver within 800ms")
			if slow.calls.Load() != 2 {
				t.Errorf("allocator called %d times, want 2", slow.calls.Load())
			}
		})
	}
}

// TestCutOffReplicaRefusesToPin: while Options.APIServer reports the
// apiserver unreachable, reviews that need the allocator are refused at
// once with a message saying so, and the allocator (its caches, its
// writes) is not consulted; reviews that need nothing from it still pass.
// Once the apiserver answers again, pinning resumes.
func TestCutOffReplicaRefusesToPin(t *testing.T) {
	for name, c := range pinClusters {
		t.Run(name, func(t *testing.T) {
			pe := newPinEnv(t, c, "")
			slow := &slowAllocator{Allocator: pe.alloc}
			var down atomic.Bool
			down.Store(true)
			e := newEnv(t, Options{Families: pe.fams, Allocator: slow, APIServer: func() error {
				if down.Load() {
					return errors.New("apiserver unreachable for 3.1s: dial tcp 127.0.0.1:6443: connect: connection refused")
				}
				return nil
			}})
			plain := reviewSpec{object: svc("web", selector)}.JSON()
			_, resp := e.review("/mutate?timeout=10s", plain)
			wantErrored(t, resp, http.StatusInternalServerError, "apiserver unreachable for 3.1s")
			if !strings.Contains(resp.Result.Message, "not pinning or checking addresses from caches that may be stale") {
				t.Errorf("message %q does not say why it refuses", resp.Result.Message)
			}
			own := reviewSpec{object: svc("own", selector+`,"clusterIP":"`+second[pe.fams[0]]+`","clusterIPs":["`+second[pe.fams[0]]+`"]`)}.JSON()
			_, resp = e.review("/validate?timeout=10s", own)
			wantErrored(t, resp, http.StatusInternalServerError, "apiserver unreachable")
			// Nothing to pin or check: answered as usual.
			headless := reviewSpec{object: svc("headless", selector+`,"clusterIP":"None"`)}.JSON()
			if _, resp = e.review("/mutate?timeout=10s", headless); !resp.Allowed {
				t.Errorf("headless Service: %+v, want allowed", resp.Result)
			}
			if n := slow.calls.Load(); n != 0 {
				t.Fatalf("allocator called %d times while the apiserver was unreachable", n)
			}

			down.Store(false)
			e2 := newEnv(t, Options{Families: pe.fams, Allocator: pe.alloc, APIServer: func() error { return nil }})
			_, resp = e2.review("/mutate?timeout=10s", plain)
			if !resp.Allowed || !strings.Contains(string(resp.Patch), lowest[pe.fams[0]]) {
				t.Errorf("apiserver back: allowed=%v patch %s, want %s pinned", resp.Allowed, resp.Patch, lowest[pe.fams[0]])
			}
		})
	}
}
