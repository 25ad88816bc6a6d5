//go:build !unix

package benchkit

import "time"

// ProcessCPU is the process's CPU time; ok is false where it is not measured.
func ProcessCPU() (d time.Duration, ok bool) { return 0, false }
