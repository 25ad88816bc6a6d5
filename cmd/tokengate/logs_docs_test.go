package main

import (
	"testing"

	"github.com/tokengate/tokengate/internal/logcheck"
)

// The messages the command itself logs (refresher start-up and dev mode)
// are prose and listed in docs/refresher.md, "Metrics and logs".
func TestLogMessagesDocumented(t *testing.T) {
	t.Parallel()
	logcheck.Check(t, "../../docs/refresher.md", "## Metrics and logs", ".")
}
