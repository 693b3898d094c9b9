//go:build unix

package ratiobench

import (
	"syscall"
	"time"
)

// ProcessCPU returns the processor time this process has spent, in user
// and system mode, since it started; 0 where that cannot be read.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
