// Package cputime reports a benchmark's CPU time per operation as
// cpu-ns/op: the process's CPU time (user and system, every goroutine, the
// garbage collector's too). Unlike ns/op (wall time) it does not count time
// the benchmark waited for a core on a shared machine, and it does count
// the garbage collector's work on other cores.
package cputime

import (
	"testing"
	"time"
)

// Meter is the process's CPU time when the measured loop started.
type Meter struct {
	start time.Duration
	ok    bool
}

// Start starts measuring (after b.ResetTimer).
func Start() Meter {
	d, ok := Process()
	return Meter{d, ok}
}

// Report adds cpu-ns/op to b's results, the CPU time since Start over
// b.N; nothing where the CPU time is not measured.
func (m Meter) Report(b *testing.B) {
	if d, ok := Process(); ok && m.ok && b.N > 0 {
		b.ReportMetric(float64(d-m.start)/float64(b.N), "cpu-ns/op")
	}
}
