package extauthz

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// A jwks_url with credentials (user:password@) never puts the password in
// the retry warning.
func TestJWKSLogsNoURLPassword(t *testing.T) {
	t.Parallel()
	hits := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case hits <- struct{}{}:
		default:
		}
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	logs := &proctest.SyncBuffer{}
	cfg := urlConfig(strings.Replace(srv.URL, "http://", "http://keysuser:url-password@", 1))
	s, err := NewServer(cfg, Options{
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		FetchBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The warning is written before the retry: once the third fetch
	// arrives, two failures have been logged.
	for range 3 {
		select {
		case <-hits:
		case <-time.After(20 * time.Second):
			t.Fatal("no retry of the failing JWKS fetch")
		}
	}
	s.Close()
	out := logs.String()
	if !strings.Contains(out, "jwks fetch failed") {
		t.Fatalf("no warning logged:\n%s", out)
	}
	if strings.Contains(out, "url-password") {
		t.Errorf("the password reached the logs:\n%s", out)
	}
	if !strings.Contains(out, "keysuser:xxxxx@") {
		t.Errorf("the URL is not named with its password masked:\n%s", out)
	}
}
