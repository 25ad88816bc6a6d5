package extauthz

import (
	"testing"

	"github.com/tokengate/tokengate/internal/logcheck"
)

// Every log message of extauthz is prose and is listed in docs/extauthz.md,
// "Logs".
func TestLogMessagesDocumented(t *testing.T) {
	t.Parallel()
	logcheck.Check(t, "../docs/extauthz.md", "## Logs", ".")
}
