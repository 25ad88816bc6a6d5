package extauthz

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/internal/proctest"
)

// A feed that refuses the admin token (401) is logged as unauthorized, at
// error level and once, not as unreachable: retrying cannot fix it.
func TestFeedUnauthorizedIsNotUnreachable(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "the-refreshers-token")
	logs := &proctest.SyncBuffer{}
	f, err := NewRevocationFeed(RevocationFeedConfig{
		URL: fs.srv.URL, AdminToken: "another-token", Clock: fakeclock.New().Now,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for range 3 { // two failures logged before the third request
		fs.next(t)
	}
	cancel()
	<-done
	out := logs.String()
	if n := strings.Count(out, `"level":"ERROR","msg":"revocation feed unauthorized: the admin token was refused; keeping the current denylist"`); n != 1 {
		t.Errorf("%d unauthorized errors logged, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "unreachable") {
		t.Errorf("a refused admin token logged as unreachable:\n%s", out)
	}
	if !strings.Contains(out, "revocation feed still failing") {
		t.Errorf("later failures not logged at debug:\n%s", out)
	}
	if strings.Contains(out, "another-token") || strings.Contains(out, "the-refreshers-token") {
		t.Errorf("a token reached the logs:\n%s", out)
	}
}
