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

// A feed URL that carries credentials (user:password@) never puts the
// password in a log line or an error: the failing feed's warning names the
// URL with the password masked.
func TestFeedLogsNoURLPassword(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "admin-secret")
	fs.failing.Store(503)
	logs := &proctest.SyncBuffer{}
	f, err := NewRevocationFeed(RevocationFeedConfig{
		URL:        strings.Replace(fs.srv.URL, "http://", "http://feeduser:url-password@", 1),
		AdminToken: "admin-secret", Clock: fakeclock.New().Now,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	// The warning is written before the retry: once the third request
	// arrives, two failures have been logged.
	for range 3 {
		fs.next(t)
	}
	cancel()
	<-done
	out := logs.String()
	if !strings.Contains(out, "revocation feed unreachable") {
		t.Fatalf("no warning logged:\n%s", out)
	}
	if strings.Contains(out, "url-password") || strings.Contains(out, "admin-secret") {
		t.Errorf("a secret reached the logs:\n%s", out)
	}
	if !strings.Contains(out, "feeduser:xxxxx@") {
		t.Errorf("the URL is not named with its password masked:\n%s", out)
	}
}
