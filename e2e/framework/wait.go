package framework

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Eventually polls cond every 200ms until it returns true or timeout
// passes; then the test fails with what and cond's last description of the
// state. It returns how long the condition took.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) time.Duration {
	t.Helper()
	var last string
	start := time.Now()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		// Not the poll's context: a read cut short by its deadline would
		// replace the state worth reporting with "context deadline exceeded".
		ok, desc := cond(context.Background())
		last = desc
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not true after %s; last seen: %s", what, timeout, last)
	}
	return time.Since(start)
}

// LoadAvg is the machine's 1, 5 and 15 minute load averages, noted beside
// figures measured on a shared machine ("?" where /proc has none).
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
