package tlsfiles

import (
	"testing"

	"github.com/tokengate/tokengate/internal/logcheck"
)

// The reload messages are prose and listed in docs/operations.md, "TLS and
// mTLS".
func TestLogMessagesDocumented(t *testing.T) {
	t.Parallel()
	logcheck.Check(t, "../../docs/operations.md", "## TLS and mTLS", ".")
}
