//go:build !unix

package ratiobench

import "time"

// ProcessCPU returns 0: this system's process times are not read.
func ProcessCPU() time.Duration { return 0 }
