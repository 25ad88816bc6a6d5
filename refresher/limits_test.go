package refresher_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"

	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// Failed attempts spend the client IP's budget; over it the answer is 429
// with Retry-After. Replays inside the grace window are never limited.
func TestRateLimitIP(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RateLimitIP, c.RateLimitIPBurst = 0.5, 3 // 3 at once, then one per 2 s
		c.RateLimitSession = 0
	}))
	s := rg.startSession("")
	rotated := rg.refresh(s.str("refresh_token")) // 1 counted (a rotation)
	unknown := "tgr1_" + strings.Repeat("C", 43)
	for i := range 2 { // 2 counted failures: the bucket is empty
		if r := rg.refresh(unknown); r.str("error") != "invalid_grant" {
			t.Fatalf("failure %d = %d %s", i, r.Status, r.Raw)
		}
	}
	r := rg.refresh(unknown)
	if r.Status != http.StatusTooManyRequests || r.str("error") != "slow_down" || r.Header.Get("Retry-After") != "2" {
		t.Fatalf("over the limit = %d %s Retry-After %q; want 429 slow_down Retry-After 2", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	if r := rg.refresh(rotated.str("refresh_token")); r.Status != http.StatusTooManyRequests {
		t.Errorf("a new rotation over the limit = %d; want 429", r.Status)
	}
	// Ten tabs converging on the rotation already made: never 429.
	for i := range 10 {
		if r := rg.refresh(s.str("refresh_token")); r.Status != http.StatusOK || r.str("refresh_token") != rotated.str("refresh_token") {
			t.Fatalf("replay %d while limited = %d %s", i, r.Status, r.Raw)
		}
	}
	rg.clock.Advance(2 * time.Second)
	if r := rg.refresh(rotated.str("refresh_token")); r.Status != http.StatusOK {
		t.Errorf("after Retry-After = %d %s", r.Status, r.Raw)
	}
	if rg.counter("tokengate_refresher_rate_limited_total", "scope", "ip") != 2 {
		t.Errorf("rate_limited{ip} = %v, want 2", rg.counter("tokengate_refresher_rate_limited_total", "scope", "ip"))
	}
}

// One session rotating faster than its budget is limited; other sessions
// from the same client are not.
func TestRateLimitSession(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RateLimitSession, c.RateLimitSessionBurst = 0.1, 2
	}))
	tok := rg.startSession("").str("refresh_token")
	for i := range 2 {
		r := rg.refresh(tok)
		if r.Status != http.StatusOK {
			t.Fatalf("rotation %d = %d %s", i, r.Status, r.Raw)
		}
		tok = r.str("refresh_token")
	}
	if r := rg.refresh(tok); r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "10" {
		t.Fatalf("third rotation = %d %s Retry-After %q; want 429, 10", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	other := rg.startSession("").str("refresh_token")
	if r := rg.refresh(other); r.Status != http.StatusOK {
		t.Errorf("another session = %d %s", r.Status, r.Raw)
	}
}

// Malformed requests get a 400 (413 for size) naming the problem, and
// nothing is written.
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.MaxBodyBytes = 1024 }))
	form, js := "application/x-www-form-urlencoded", "application/json"
	auth := []string{"Authorization", "Bearer " + adminToken}
	tests := []struct {
		name, method, path, ct, body string
		header                       []string
		status                       int
		code, descPrefix             string
	}{
		{"token: wrong content type", "POST", "/v1/token", "text/plain", "x", nil, 400, "invalid_request", "Content-Type:"},
		{"token: missing grant_type", "POST", "/v1/token", form, "refresh_token=x", nil, 400, "invalid_request", "grant_type:"},
		{"token: other grant type", "POST", "/v1/token", form, "grant_type=password&username=a", nil, 400, "unsupported_grant_type", "grant_type"},
		{"token: JSON other grant type", "POST", "/v1/token", js, `{"grant_type":"client_credentials"}`, nil, 400, "unsupported_grant_type", "grant_type"},
		{"token: missing refresh_token", "POST", "/v1/token", form, "grant_type=refresh_token", nil, 400, "invalid_request", "refresh_token:"},
		{"token: duplicate refresh_token", "POST", "/v1/token", form, "grant_type=refresh_token&refresh_token=a&refresh_token=b", nil, 400, "invalid_request", "refresh_token:"},
		{"token: malformed JSON", "POST", "/v1/token", js, `{"refresh_token":`, nil, 400, "invalid_request", "body:"},
		{"token: JSON number", "POST", "/v1/token", js, `{"refresh_token":5}`, nil, 400, "invalid_request", "refresh_token:"},
		{"token: JSON array", "POST", "/v1/token", js, `[]`, nil, 400, "invalid_request", "body: must be a JSON object"},
		{"token: body too large", "POST", "/v1/token", form, "grant_type=refresh_token&refresh_token=" + strings.Repeat("a", 2048), nil, 413, "invalid_request", "request body too large"},
		{"sessions: no admin token", "POST", "/v1/sessions", js, `{"sub":"a"}`, nil, 401, "invalid_token", "admin"},
		{"sessions: wrong admin token", "POST", "/v1/sessions", js, `{"sub":"a"}`, []string{"Authorization", "Bearer " + adminToken + "x"}, 401, "invalid_token", "admin"},
		{"sessions: empty body", "POST", "/v1/sessions", js, ``, auth, 400, "invalid_request", "body:"},
		{"sessions: missing sub", "POST", "/v1/sessions", js, `{"claims":{}}`, auth, 400, "invalid_request", "sub:"},
		{"sessions: unknown field", "POST", "/v1/sessions", js, `{"sub":"a","subject":"b"}`, auth, 400, "invalid_request", "subject:"},
		{"sessions: claims not an object", "POST", "/v1/sessions", js, `{"sub":"a","claims":[1]}`, auth, 400, "invalid_request", "claims:"},
		{"sessions: reserved claim", "POST", "/v1/sessions", js, `{"sub":"a","claims":{"exp":1}}`, auth, 400, "invalid_request", "claims.exp:"},
		{"sessions: idle_ttl too long", "POST", "/v1/sessions", js, `{"sub":"a","idle_ttl":"2h"}`, auth, 400, "invalid_request", "idle_ttl:"},
		{"sessions: idle_ttl garbage", "POST", "/v1/sessions", js, `{"sub":"a","idle_ttl":"soon"}`, auth, 400, "invalid_request", "idle_ttl:"},
		{"sessions: sub wrong type", "POST", "/v1/sessions", js, `{"sub":7}`, auth, 400, "invalid_request", "sub:"},
		{"patch: missing claims", "PATCH", "/v1/sessions/x", js, `{}`, auth, 400, "invalid_request", "claims:"},
		{"feed: no admin token", "GET", "/v1/revocations", "", "", nil, 401, "invalid_token", "admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rg.do(rg.request(tc.method, tc.path, tc.ct, tc.body, tc.header...))
			if r.Status != tc.status || r.str("error") != tc.code || !strings.HasPrefix(r.str("error_description"), tc.descPrefix) {
				t.Errorf("= %d %s; want %d %s %q…", r.Status, r.Raw, tc.status, tc.code, tc.descPrefix)
			}
			if tc.status == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Error("401 without WWW-Authenticate: Bearer")
			}
		})
	}
	if n := rg.counter("tokengate_refresher_sessions_created_total"); n != 0 {
		t.Errorf("a malformed request created %v sessions", n)
	}
}

// The JSON form of the token request (not RFC 6749, but what SPAs send).
func TestJSONTokenRequest(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	tok := rg.startSession("").str("refresh_token")
	r := rg.do(rg.request("POST", "/v1/token", "application/json; charset=utf-8", `{"refresh_token":"`+tok+`"}`))
	if r.Status != http.StatusOK || r.str("refresh_token") == "" {
		t.Fatalf("JSON refresh = %d %s", r.Status, r.Raw)
	}
}

func TestConfigValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	c := refresher.Defaults()
	c.Issuer = "auth.example"
	c.AccessTTL = 0
	c.RefreshTTL = 5000 * time.Hour
	c.CORSAllowedOrigins = []string{"*", "https://ok.example", "ftp://x"}
	c.RefreshTokenTransport = "header"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{"Issuer:", "Audience:", "AccessTTL:", "RefreshTTL:", "AdminToken:",
		"CORSAllowedOrigins[0]:", "CORSAllowedOrigins[2]:", "RefreshTokenTransport:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "CORSAllowedOrigins[1]") {
		t.Error("a good origin was reported")
	}
	// A library names fields, never the command's flags.
	if strings.Contains(err.Error(), "--") {
		t.Errorf("Validate error names a flag:\n%v", err)
	}
}

// Across replicas, a replay answered from the store (the rotation happened
// on another replica) is not limited either.
func TestRateLimitSparesStoreReplays(t *testing.T) {
	t.Parallel()
	st, keys, clock := memstore.New(), generateKeys(t), fakeclock.New()
	limits := withConfig(func(c *refresher.Config) { c.RateLimitIP, c.RateLimitIPBurst = 0.5, 1 })
	a := newRig(t, withStore(st), withKeys(keys), withClock(clock), limits)
	b := newRig(t, withStore(st), withKeys(keys), withClock(clock), limits)
	t0 := a.startSession("").str("refresh_token")
	fromA := a.refresh(t0)
	if r := b.refresh("tgr1_" + strings.Repeat("D", 43)); r.str("error") != "invalid_grant" { // B's budget: spent
		t.Fatalf("unknown token on B = %s", r.Raw)
	}
	if r := b.refresh("tgr1_" + strings.Repeat("E", 43)); r.Status != http.StatusTooManyRequests {
		t.Fatalf("B over its limit = %d %s", r.Status, r.Raw)
	}
	if r := b.refresh(t0); r.Status != http.StatusOK || r.str("refresh_token") != fromA.str("refresh_token") {
		t.Fatalf("store replay on a limited replica = %d %s", r.Status, r.Raw)
	}
	if r := b.refresh(fromA.str("refresh_token")); r.Status != http.StatusTooManyRequests {
		t.Errorf("a new rotation on the limited replica = %d, want 429", r.Status)
	}
}

// /v1/revoke reads the store for every well-formed token, so it spends the
// same per-IP budget as /v1/token: a flood of sign-outs with guessed tokens
// is answered 429 without touching the store.
func TestRateLimitRevoke(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RateLimitIP, c.RateLimitIPBurst = 0.5, 3 // 3 at once, then one per 2 s
	}))
	s := rg.startSession("")
	revoke := func(token string) response {
		return rg.do(rg.request("POST", "/v1/revoke", "application/x-www-form-urlencoded", "token="+token))
	}
	for i := range 3 {
		if r := revoke("tgr1_" + strings.Repeat(string(rune('F'+i)), 43)); r.Status != http.StatusOK {
			t.Fatalf("revoke %d = %d %s", i, r.Status, r.Raw)
		}
	}
	r := revoke("tgr1_" + strings.Repeat("Z", 43))
	if r.Status != http.StatusTooManyRequests || r.str("error") != "slow_down" || r.Header.Get("Retry-After") != "2" {
		t.Fatalf("revoke over the limit = %d %s Retry-After %q; want 429 slow_down Retry-After 2", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	// The budget is the client's, shared with /v1/token.
	if r := rg.refresh("tgr1_" + strings.Repeat("Y", 43)); r.Status != http.StatusTooManyRequests {
		t.Errorf("refresh after the revoke flood = %d, want 429", r.Status)
	}
	if !rg.session(s.str("session_id")).RevokedAt.IsZero() {
		t.Fatal("session revoked by the flood")
	}
	rg.clock.Advance(2 * time.Second)
	if r := revoke(s.str("refresh_token")); r.Status != http.StatusOK {
		t.Fatalf("sign-out after Retry-After = %d %s", r.Status, r.Raw)
	}
	if rg.session(s.str("session_id")).RevokedAt.IsZero() {
		t.Error("the sign-out did not revoke the session")
	}
	if n := rg.counter("tokengate_refresher_rate_limited_total", "scope", "ip"); n != 2 {
		t.Errorf("rate_limited{ip} = %v, want 2", n)
	}
}
