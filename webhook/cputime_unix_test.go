//go:build unix

package webhook

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user+system) this process has used. Unlike
// wall-clock throughput it does not depend on how much CPU other processes
// on a shared machine take.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
