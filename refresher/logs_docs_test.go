package refresher_test

import (
	"testing"

	"github.com/tokengate/tokengate/internal/logcheck"
)

// Every log message of the refresher and its stores is prose and is listed
// in docs/refresher.md, "Metrics and logs".
func TestLogMessagesDocumented(t *testing.T) {
	t.Parallel()
	logcheck.Check(t, "../docs/refresher.md", "## Metrics and logs",
		".", "store", "store/memstore", "store/boltstore", "store/redisstore")
}
