package refresher_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"

	// The backends openStore opens by scheme.
	_ "github.com/tokengate/tokengate/refresher/store/memstore"
	_ "github.com/tokengate/tokengate/refresher/store/redisstore"
)

// Every row of the rotation table (docs/refresher.md, "Rotation
// semantics"), over real HTTP with a fake clock. Each case starts a session
// (token T0) and then runs steps; the last step's answer is checked.
func TestRotationTable(t *testing.T) {
	t.Parallel()
	type want struct {
		status int
		err    string // JSON error code, "" for success
		// sameAs names an earlier step whose refresh token the answer must equal.
		sameAs string
		// newToken: the answer's refresh token differs from every earlier one.
		newToken bool
		// sessionRevoked: after the step, the session is revoked.
		sessionRevoked bool
	}
	type step struct {
		name    string
		advance time.Duration
		present string // "T0" (first token) or the name of an earlier step whose refresh token is presented
		raw     string // a literal token instead
		want    want
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"active token rotates", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
		}},
		{"rotated inside grace replays the same child", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: 29 * time.Second, present: "T0", want: want{status: 200, sameAs: "r1"}},
		}},
		{"rotated at grace end is reuse", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: 30 * time.Second, present: "T0", want: want{status: 400, err: "invalid_grant", sessionRevoked: true}},
		}},
		{"rotated long ago is reuse, and the newest token then fails", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: 5 * time.Minute, present: "T0", want: want{status: 400, err: "invalid_grant", sessionRevoked: true}},
			{name: "r3", present: "r1", want: want{status: 400, err: "invalid_grant", sessionRevoked: true}},
		}},
		{"older generation inside grace is reuse (only the immediate parent replays)", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: time.Second, present: "r1", want: want{status: 200, newToken: true}},
			{name: "r3", advance: time.Second, present: "T0", want: want{status: 400, err: "invalid_grant", sessionRevoked: true}},
		}},
		{"immediate parent still replays after a chain", []step{
			{name: "r1", present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: time.Second, present: "r1", want: want{status: 200, newToken: true}},
			{name: "r3", advance: time.Second, present: "r1", want: want{status: 200, sameAs: "r2"}},
		}},
		{"idle-expired token", []step{
			{name: "r1", advance: time.Hour, present: "T0", want: want{status: 400, err: "invalid_grant"}},
		}},
		{"idle expiry slides with each rotation", []step{
			{name: "r1", advance: 50 * time.Minute, present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: 50 * time.Minute, present: "r1", want: want{status: 200, newToken: true}},
		}},
		{"absolute session expiry", []step{
			{name: "r1", advance: 50 * time.Minute, present: "T0", want: want{status: 200, newToken: true}},
			{name: "r2", advance: 23*time.Hour + 10*time.Minute, present: "r1", want: want{status: 400, err: "invalid_grant"}},
		}},
		{"unknown token", []step{
			{name: "r1", raw: "tgr1_" + strings.Repeat("A", 43), want: want{status: 400, err: "invalid_grant"}},
		}},
		{"malformed token", []step{
			{name: "r1", raw: "not-a-token", want: want{status: 400, err: "invalid_grant"}},
		}},
	}
	// Every row on every store: sessions have random IDs, so the cases of one
	// store share it.
	for _, kind := range []string{"memory", "bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			st := openStore(t, kind)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					rg := newRig(t, withStore(st))
					first := rg.startSession("")
					sid := first.str("session_id")
					tokens := map[string]string{"T0": first.str("refresh_token")}
					for _, st := range tc.steps {
						rg.clock.Advance(st.advance)
						tok := st.raw
						if tok == "" {
							tok = tokens[st.present]
						}
						got := rg.refresh(tok)
						if got.Status != st.want.status || got.str("error") != st.want.err {
							t.Fatalf("step %s: got %d %s; want %d error %q", st.name, got.Status, got.Raw, st.want.status, st.want.err)
						}
						rt := got.str("refresh_token")
						if st.want.sameAs != "" && rt != tokens[st.want.sameAs] {
							t.Errorf("step %s: refresh token differs from step %s's", st.name, st.want.sameAs)
						}
						if st.want.newToken {
							for name, old := range tokens {
								if rt == old {
									t.Errorf("step %s: refresh token equals %s's", st.name, name)
								}
							}
							if !strings.HasPrefix(rt, "tgr1_") {
								t.Errorf("step %s: refresh token %q lacks the version prefix", st.name, rt)
							}
						}
						if rt != "" {
							tokens[st.name] = rt
						}
						if revoked := !rg.session(sid).RevokedAt.IsZero(); revoked != st.want.sessionRevoked {
							t.Errorf("step %s: session revoked = %v, want %v", st.name, revoked, st.want.sessionRevoked)
						}
					}
				})
			}
		})
	}
}

// openStore opens a store of kind (a registered scheme) for one test, as
// --store would: a file in the test's directory for bolt, a real
// redis-server for redis.
func openStore(t *testing.T, kind string) store.Store {
	t.Helper()
	uri := kind + "://"
	switch kind {
	case "bolt":
		uri += filepath.Join(t.TempDir(), "tokengate.db")
	case "redis":
		uri += proctest.StartRedis(t).Addr
	}
	st, err := store.Open(context.Background(), uri, store.OpenOptions{RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A store that does not answer gives 503 with Retry-After, never
// invalid_grant (which would sign the user out).
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "tokengate.db"))
	if err != nil {
		t.Fatal(err)
	}
	rg := newRig(t, withStore(st))
	tok := rg.startSession("").str("refresh_token")
	st.Close() // the store is gone: every call now fails
	got := rg.refresh(tok)
	if got.Status != http.StatusServiceUnavailable || got.str("error") != "temporarily_unavailable" {
		t.Fatalf("refresh with the store down = %d %s; want 503 temporarily_unavailable", got.Status, got.Raw)
	}
	if got.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if r := rg.do(rg.request("GET", "/readyz", "", "")); r.Status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the store down = %d, want 503", r.Status)
	}
	if r := rg.do(rg.request("GET", "/healthz", "", "")); r.Status != http.StatusOK {
		t.Errorf("/healthz = %d, want 200 (liveness does not depend on the store)", r.Status)
	}
	if n := rg.counter("tokengate_refresher_store_errors_total"); n == 0 {
		t.Error("store errors not counted")
	}
}
