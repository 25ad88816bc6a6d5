//go:build !unix

package extauthz

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
