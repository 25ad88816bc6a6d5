//go:build !race

package extauthz

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// A cache hit allocates nothing over gRPC and only the request-header map
// over HTTP forward-auth: the allow answers are ready-made per cache entry
// (docs/benchmarks.md has the figures). This counts allocations, not time,
// so it is deterministic; it is not parallel because testing.AllocsPerRun
// counts the whole process's allocations, and the race detector (excluded
// by the build tag) allocates on its own.
func TestCachedCheckAllocs(t *testing.T) {
	k := newTestKey(t, "ES256", "allocs")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	cfg.Token.RemoveAuthorizationHeader = true
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	tok := k.token(t, claimsAt(h.clock.Now()))

	req := checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + tok, "origin": "https://app.test"})
	if a := h.check(t, req); !a.allowed || a.set["x-user-id"] == "" {
		t.Fatalf("check: %+v", a)
	}
	if n := testing.AllocsPerRun(1000, func() { h.srv.Check(t.Context(), req) }); n != 0 {
		t.Errorf("gRPC Check on a cache hit: %v allocations, want 0", n)
	}

	r := forwardAuthRequest(tok)
	r.Header.Set("Origin", "https://app.test")
	w := &headerRecorder{h: http.Header{}}
	h.srv.handleForwardAuth(w, r)
	if w.status != http.StatusOK || w.h.Get("X-User-Id") == "" {
		t.Fatalf("forward-auth: %d %v", w.status, w.h)
	}
	if n := testing.AllocsPerRun(1000, func() { clear(w.h); h.srv.handleForwardAuth(w, r) }); n > 2 {
		t.Errorf("forward-auth on a cache hit: %v allocations, want ≤ 2 (the map of the headers a decision reads)", n)
	}
}
