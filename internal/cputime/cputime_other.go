//go:build !unix

package cputime

import "time"

// Process is the process's CPU time; ok is false where it is not measured.
func Process() (d time.Duration, ok bool) { return 0, false }
