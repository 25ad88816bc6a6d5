package refresher_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/tokengate/tokengate/refresher"
)

// verify checks an access token against the JWKS the refresher serves (over
// HTTP) and returns its header and claims.
func (rg *rig) verify(token string) (map[string]any, map[string]any, error) {
	rg.t.Helper()
	r := rg.do(rg.request("GET", "/.well-known/jwks.json", "", ""))
	set, err := jwk.Parse([]byte(r.Raw))
	if err != nil {
		rg.t.Fatalf("parse JWKS: %v", err)
	}
	payload, err := jws.Verify([]byte(token), jws.WithKeySet(set))
	if err != nil {
		return nil, nil, err
	}
	var hdr, claims map[string]any
	h, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	json.Unmarshal(h, &hdr)
	json.Unmarshal(payload, &claims)
	return hdr, claims, nil
}

func TestAccessToken(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	r := rg.startSession(`{"sub":"alice","claims":{"name":"Alice","roles":["admin","dev"]}}`)
	if r.str("token_type") != "Bearer" || r.Body["expires_in"] != float64(900) || r.Body["refresh_expires_in"] != float64(3600) {
		t.Errorf("token response = %s", r.Raw)
	}
	if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "no-cache" {
		t.Errorf("token response caching headers = %q %q", r.Header.Get("Cache-Control"), r.Header.Get("Pragma"))
	}
	hdr, claims, err := rg.verify(r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := rg.keys.Signer.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	wantHdr := map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": base64.RawURLEncoding.EncodeToString(thumb)}
	if d := cmp.Diff(wantHdr, hdr); d != "" {
		t.Errorf("header (-want +got):\n%s", d)
	}
	now := float64(rg.clock.Now().Unix())
	jti, _ := claims["jti"].(string)
	if jti == "" {
		t.Error("no jti")
	}
	want := map[string]any{
		"iss": "https://auth.test", "sub": "alice", "aud": "api", "iat": now, "nbf": now, "exp": now + 900,
		"jti": jti, "sid": r.str("session_id"), "name": "Alice", "roles": []any{"admin", "dev"},
	}
	if d := cmp.Diff(want, claims); d != "" {
		t.Errorf("claims (-want +got):\n%s", d)
	}
}

func TestSessionLifetimes(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.SessionMaxAge = 90 * time.Minute }))
	r := rg.startSession(`{"sub":"alice","idle_ttl":"10m"}`)
	if r.Body["refresh_expires_in"] != float64(600) {
		t.Fatalf("idle_ttl 10m: refresh_expires_in = %v", r.Body["refresh_expires_in"])
	}
	tok := r.str("refresh_token")
	// Rotating every 9 minutes keeps it alive; each answer slides 10 more
	// minutes, never past the absolute 90 minutes.
	for i := 1; ; i++ {
		rg.clock.Advance(9 * time.Minute)
		got := rg.refresh(tok)
		elapsed := time.Duration(i) * 9 * time.Minute
		if elapsed >= 90*time.Minute {
			if got.str("error") != "invalid_grant" {
				t.Fatalf("at %s: %d %s; want invalid_grant (session over)", elapsed, got.Status, got.Raw)
			}
			break
		}
		if got.Status != http.StatusOK {
			t.Fatalf("at %s: %d %s", elapsed, got.Status, got.Raw)
		}
		wantRefresh := min(10*time.Minute, 90*time.Minute-elapsed)
		wantAccess := min(15*time.Minute, 90*time.Minute-elapsed)
		if got.Body["refresh_expires_in"] != wantRefresh.Seconds() || got.Body["expires_in"] != wantAccess.Seconds() {
			t.Fatalf("at %s: refresh_expires_in %v expires_in %v; want %v %v", elapsed,
				got.Body["refresh_expires_in"], got.Body["expires_in"], wantRefresh.Seconds(), wantAccess.Seconds())
		}
		tok = got.str("refresh_token")
	}
}

func TestPatchClaims(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	r := rg.startSession(`{"sub":"alice","claims":{"roles":["viewer"]}}`)
	sid := r.str("session_id")
	p := rg.admin("PATCH", "/v1/sessions/"+sid, `{"claims":{"roles":["admin"],"name":"Alice"}}`)
	if p.Status != http.StatusOK {
		t.Fatalf("PATCH = %d %s", p.Status, p.Raw)
	}
	next := rg.refresh(r.str("refresh_token"))
	_, claims, err := rg.verify(next.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]any{"admin"}, claims["roles"]); d != "" || claims["name"] != "Alice" {
		t.Errorf("claims after PATCH: %v", claims)
	}
	if p := rg.admin("PATCH", "/v1/sessions/nope", `{"claims":{}}`); p.Status != http.StatusNotFound {
		t.Errorf("PATCH unknown = %d", p.Status)
	}
	if p := rg.admin("PATCH", "/v1/sessions/"+sid, `{"claims":{"sub":"mallory"}}`); p.Status != http.StatusBadRequest || !strings.Contains(p.str("error_description"), "claims.sub") {
		t.Errorf("PATCH reserved claim = %d %s", p.Status, p.Raw)
	}
}

func TestSignOut(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	a := rg.startSession(`{"sub":"alice"}`)
	b := rg.startSession(`{"sub":"bob"}`)
	c := rg.startSession(`{"sub":"bob"}`)
	d := rg.startSession(`{"sub":"carol"}`)

	// RFC 7009: 200 for unknown and garbage tokens alike.
	for _, tok := range []string{"tgr1_" + strings.Repeat("B", 43), "garbage"} {
		r := rg.do(rg.request("POST", "/v1/revoke", "application/x-www-form-urlencoded", "token="+tok))
		if r.Status != http.StatusOK {
			t.Errorf("revoke %q = %d %s", tok, r.Status, r.Raw)
		}
	}
	if r := rg.do(rg.request("POST", "/v1/revoke", "application/x-www-form-urlencoded", "token="+a.str("refresh_token"))); r.Status != http.StatusOK {
		t.Fatalf("revoke = %d", r.Status)
	}
	if r := rg.refresh(a.str("refresh_token")); r.str("error") != "invalid_grant" {
		t.Errorf("refresh after /v1/revoke = %s", r.Raw)
	}

	if r := rg.admin("DELETE", "/v1/subjects/bob/sessions", ""); r.Status != http.StatusOK {
		t.Fatalf("DELETE subject = %d %s", r.Status, r.Raw)
	} else if d := cmp.Diff([]any{b.str("session_id"), c.str("session_id")}, r.Body["revoked"], sortStrings); d != "" {
		t.Errorf("revoked sids (-want +got):\n%s", d)
	}
	for _, s := range []response{b, c} {
		if r := rg.refresh(s.str("refresh_token")); r.str("error") != "invalid_grant" {
			t.Errorf("bob's session still refreshes: %s", r.Raw)
		}
	}

	if r := rg.admin("DELETE", "/v1/sessions/"+d.str("session_id"), ""); r.Status != http.StatusOK || r.Body["revoked"] != true {
		t.Fatalf("DELETE session = %d %s", r.Status, r.Raw)
	}
	if r := rg.admin("DELETE", "/v1/sessions/"+d.str("session_id"), ""); r.Status != http.StatusOK || r.Body["revoked"] != false {
		t.Errorf("second DELETE = %d %s; want 200 revoked:false", r.Status, r.Raw)
	}
	if r := rg.admin("DELETE", "/v1/sessions/nope", ""); r.Status != http.StatusNotFound {
		t.Errorf("DELETE unknown = %d", r.Status)
	}

	// The feed lists all four, with until = now + access TTL.
	feed := rg.admin("GET", "/v1/revocations?wait=0", "")
	var got struct {
		Cursor  string `json:"cursor"`
		Revoked []struct {
			SID   string    `json:"sid"`
			Until time.Time `json:"until"`
		} `json:"revoked"`
	}
	if err := json.Unmarshal([]byte(feed.Raw), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Revoked) != 4 || got.Cursor == "" {
		t.Fatalf("feed = %s", feed.Raw)
	}
	for _, r := range got.Revoked {
		if !r.Until.Equal(rg.clock.Now().Add(15 * time.Minute)) {
			t.Errorf("until = %v, want now+access TTL", r.Until)
		}
	}
	if again := rg.admin("GET", "/v1/revocations?wait=0&after="+got.Cursor, ""); !strings.Contains(again.Raw, `"revoked":[]`) {
		t.Errorf("feed after cursor = %s; want empty", again.Raw)
	}
	if n := rg.counter("tokengate_refresher_revocations_total"); n != 4 {
		t.Errorf("revocations counted = %v, want 4", n)
	}
}

var sortStrings = cmp.Transformer("sort", func(in []any) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		out = append(out, v.(string))
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// A long poll returns as soon as a revocation lands.
func TestRevocationsLongPoll(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	s := rg.startSession("")
	cursor := rg.admin("GET", "/v1/revocations?wait=0", "").str("cursor")
	done := make(chan response, 1)
	go func() { done <- rg.admin("GET", "/v1/revocations?wait=60s&after="+cursor, "") }()
	rg.admin("DELETE", "/v1/sessions/"+s.str("session_id"), "")
	got := <-done
	if got.Status != http.StatusOK || !strings.Contains(got.Raw, s.str("session_id")) {
		t.Fatalf("long poll = %d %s", got.Status, got.Raw)
	}
	if r := rg.admin("GET", "/v1/revocations?wait=soon", ""); r.Status != http.StatusBadRequest || !strings.HasPrefix(r.str("error_description"), "wait:") {
		t.Errorf("bad wait = %d %s", r.Status, r.Raw)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	rg.refresh(rg.startSession("").str("refresh_token"))
	if r := rg.do(rg.request("GET", "/readyz", "", "")); r.Status != http.StatusOK {
		t.Errorf("/readyz = %d", r.Status)
	}
	j := rg.do(rg.request("GET", "/.well-known/jwks.json", "", ""))
	if j.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Errorf("JWKS Cache-Control = %q", j.Header.Get("Cache-Control"))
	}
	if strings.Contains(j.Raw, `"d"`) {
		t.Error("JWKS publishes a private key")
	}
	m := rg.do(rg.request("GET", "/metrics", "", ""))
	for _, name := range []string{"tokengate_refresher_rotations_total 1", "tokengate_refresher_sessions_created_total 1",
		"tokengate_refresher_store_latency_seconds_bucket{op=\"rotate\"", "tokengate_refresher_replays_total",
		"tokengate_refresher_reuse_detections_total 0"} {
		if !strings.Contains(m.Raw, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// Drain (called at shutdown) answers long polls at once, empty, with the
// cursor unchanged, so the consumer reconnects elsewhere.
func TestDrainEndsLongPolls(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	cursor := rg.admin("GET", "/v1/revocations?wait=0", "").str("cursor")
	done := make(chan response, 1)
	go func() { done <- rg.admin("GET", "/v1/revocations?wait=60s&after="+cursor, "") }()
	rg.srv.Drain()
	got := <-done
	if got.Status != http.StatusOK || got.str("cursor") != cursor || !strings.Contains(got.Raw, `"revoked":[]`) {
		t.Fatalf("drained long poll = %d %s", got.Status, got.Raw)
	}
}
