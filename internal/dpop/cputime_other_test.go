//go:build !unix

package dpop_test

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
