package refresher_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// proof signs a DPoP proof by k for POST path on this refresher, at the
// rig's clock.
func (rg *rig) proof(k *dpoptest.Key, path string, opts ...dpoptest.Opt) string {
	rg.t.Helper()
	return k.Proof("POST", rg.http.URL+path, append([]dpoptest.Opt{dpoptest.WithIAT(rg.clock.Now())}, opts...)...)
}

// refreshDPoP refreshes token with the DPoP header proof ("" for none).
func (rg *rig) refreshDPoP(token, proof string) response {
	rg.t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}.Encode()
	req := rg.request("POST", "/v1/token", "application/x-www-form-urlencoded", form)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return rg.do(req)
}

// signIn posts body to /v1/sessions with the DPoP header proof ("" for none).
func (rg *rig) signIn(body, proof string) response {
	rg.t.Helper()
	req := rg.request("POST", "/v1/sessions", "application/json", body, "Authorization", "Bearer "+adminToken)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return rg.do(req)
}

// startBound signs alice in bound to k (dpop_jkt) and returns the answer.
func (rg *rig) startBound(k *dpoptest.Key) response {
	rg.t.Helper()
	r := rg.signIn(`{"sub":"alice","dpop_jkt":"`+k.JKT()+`"}`, "")
	if r.Status != http.StatusCreated || r.str("token_type") != "DPoP" {
		rg.t.Fatalf("bound sign-in = %d %s", r.Status, r.Raw)
	}
	return r
}

// cnf returns the access token's cnf claim (nil for none). The signature
// is checked by other tests; here only the claims matter.
func cnf(t *testing.T, accessToken string) map[string]any {
	t.Helper()
	parts := strings.Split(accessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWS: %q", accessToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		CNF map[string]any `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.CNF
}

func wantError(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Fatalf("%s = %d %s, want %d %s", what, r.Status, r.Raw, status, code)
	}
}

func wantDPoPPair(t *testing.T, what string, r response, jkt string) {
	t.Helper()
	if r.Status != http.StatusOK && r.Status != http.StatusCreated {
		t.Fatalf("%s = %d %s, want a pair", what, r.Status, r.Raw)
	}
	if r.str("token_type") != "DPoP" {
		t.Errorf("%s: token_type %q, want DPoP", what, r.str("token_type"))
	}
	if got := cnf(t, r.str("access_token"))["jkt"]; got != jkt {
		t.Errorf("%s: cnf.jkt %v, want %s", what, got, jkt)
	}
}

// A session bound to a key refreshes with a proof by that key: the new
// access token carries cnf.jkt and the answer says token_type DPoP; the
// chain continues with fresh proofs.
func TestDPoPBoundRefreshRightKey(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	k := dpoptest.NewKey(t, "ES256")
	first := rg.startBound(k)
	wantDPoPPair(t, "sign-in", first, k.JKT())
	tok := first.str("refresh_token")
	for i := range 3 {
		rg.clock.Advance(time.Minute)
		r := rg.refreshDPoP(tok, rg.proof(k, "/v1/token"))
		wantDPoPPair(t, "refresh", r, k.JKT())
		if r.str("refresh_token") == tok {
			t.Fatalf("refresh %d: not rotated", i)
		}
		tok = r.str("refresh_token")
	}
	if got := rg.session(first.str("session_id")).JKT; got != k.JKT() {
		t.Errorf("stored session jkt %q, want %q", got, k.JKT())
	}
}

// A bound refresh token without a proof, or with a proof by another key, is
// invalid_grant; nothing changes (no rotation, no revocation) and the
// key's holder keeps refreshing.
func TestDPoPBoundRefreshWrongKeyOrNoProof(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	owner, thief := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
	first := rg.startBound(owner)
	tok, sid := first.str("refresh_token"), first.str("session_id")

	wantError(t, "refresh with another key", rg.refreshDPoP(tok, rg.proof(thief, "/v1/token")), http.StatusBadRequest, "invalid_grant")
	wantError(t, "refresh without a proof", rg.refreshDPoP(tok, ""), http.StatusBadRequest, "invalid_grant")
	if s := rg.session(sid); s.Generation != 0 || !s.RevokedAt.IsZero() {
		t.Fatalf("session after refused refreshes: generation %d, revoked %v; want unchanged", s.Generation, s.RevokedAt)
	}
	if got := rg.counter("tokengate_refresher_refresh_failures_total", "reason", "dpop_key_mismatch"); got != 2 {
		t.Errorf("failures{dpop_key_mismatch} = %v, want 2", got)
	}
	if got := rg.counter("tokengate_refresher_revocations_total"); got != 0 {
		t.Errorf("revocations = %v, want 0", got)
	}
	if !strings.Contains(rg.logs.String(), "refresh without the session's dpop key refused") {
		t.Errorf("no audit log line for the refused refresh: %s", rg.logs.String())
	}
	wantDPoPPair(t, "owner's refresh", rg.refreshDPoP(tok, rg.proof(owner, "/v1/token")), owner.JKT())
}

// Inside the grace window a replay of the rotated token with a proof by the
// bound key gets the same pair (from this replica's memory); another key
// gets nothing, and its attempt does not disturb the owner's replay.
func TestDPoPReplayInGraceChecksKey(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	owner, thief := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(owner).str("refresh_token")
	r1 := rg.refreshDPoP(tok, rg.proof(owner, "/v1/token"))
	wantDPoPPair(t, "rotation", r1, owner.JKT())
	rg.clock.Advance(time.Second)
	thiefAnswer := rg.refreshDPoP(tok, rg.proof(thief, "/v1/token"))
	wantError(t, "thief's replay", thiefAnswer, http.StatusBadRequest, "invalid_grant")
	if strings.Contains(thiefAnswer.Raw, r1.str("refresh_token")) {
		t.Fatal("the thief's answer carries the owner's refresh token")
	}
	r2 := rg.refreshDPoP(tok, rg.proof(owner, "/v1/token"))
	wantDPoPPair(t, "owner's replay", r2, owner.JKT())
	if r2.str("refresh_token") != r1.str("refresh_token") {
		t.Error("owner's replay got another refresh token")
	}
}

// A proof is accepted once: the same proof again is invalid_dpop_proof.
func TestDPoPReplayedProof(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	k := dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(k).str("refresh_token")
	p := rg.proof(k, "/v1/token")
	r := rg.refreshDPoP(tok, p)
	wantDPoPPair(t, "first use", r, k.JKT())
	wantError(t, "the same proof again", rg.refreshDPoP(r.str("refresh_token"), p), http.StatusBadRequest, "invalid_dpop_proof")
	if got := rg.counter("tokengate_refresher_refresh_failures_total", "reason", "invalid_dpop_proof"); got != 1 {
		t.Errorf("failures{invalid_dpop_proof} = %v, want 1", got)
	}
}

// Bad proofs at the token endpoint: wrong htu or htm, two headers, not a
// proof at all.
func TestDPoPInvalidProofs(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	k := dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(k).str("refresh_token")
	cases := map[string]string{
		"htu of another endpoint": rg.proof(k, "/v1/revoke"),
		"htm GET":                 k.Proof("GET", rg.http.URL+"/v1/token", dpoptest.WithIAT(rg.clock.Now())),
		"stale iat":               k.Proof("POST", rg.http.URL+"/v1/token", dpoptest.WithIAT(rg.clock.Now().Add(-time.Hour))),
		"garbage":                 "not-a-proof",
	}
	for name, p := range cases {
		wantError(t, name, rg.refreshDPoP(tok, p), http.StatusBadRequest, "invalid_dpop_proof")
	}
	req := rg.request("POST", "/v1/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}.Encode())
	req.Header.Add("DPoP", rg.proof(k, "/v1/token"))
	req.Header.Add("DPoP", rg.proof(k, "/v1/token"))
	wantError(t, "two DPoP headers", rg.do(req), http.StatusBadRequest, "invalid_dpop_proof")
	// None of these touched the session.
	wantDPoPPair(t, "valid proof", rg.refreshDPoP(tok, rg.proof(k, "/v1/token")), k.JKT())
}

// Failed proofs spend the client IP's budget like other failed attempts.
func TestDPoPFailedProofsAreRateLimited(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RateLimitIP, c.RateLimitIPBurst = 0.01, 3 // nothing refills during the test
	}))
	k := dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(k).str("refresh_token")
	for i := range 3 {
		if r := rg.refreshDPoP(tok, "not-a-proof"); r.Status != http.StatusBadRequest {
			t.Fatalf("attempt %d = %d %s, want 400", i, r.Status, r.Raw)
		}
	}
	r := rg.refreshDPoP(tok, "not-a-proof")
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("attempt past the budget = %d %s, want 429 with Retry-After", r.Status, r.Raw)
	}
}

// With nonces on, a proof without one is answered use_dpop_nonce with a
// DPoP-Nonce; the retry with it succeeds. A nonce past half its lifetime
// still works, and the answer carries a fresh one.
func TestDPoPNonceFlow(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.DPoPNonce = true
		c.DPoPNonceSecret = bytes.Repeat([]byte("s"), 32)
		c.DPoPNonceLifetime = 4 * time.Minute
	}))
	k := dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(k).str("refresh_token") // sign-in needs no nonce

	r := rg.refreshDPoP(tok, rg.proof(k, "/v1/token"))
	wantError(t, "proof without a nonce", r, http.StatusBadRequest, "use_dpop_nonce")
	nonce := r.Header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
	}
	r = rg.refreshDPoP(tok, rg.proof(k, "/v1/token", dpoptest.WithNonce(nonce)))
	wantDPoPPair(t, "proof with the nonce", r, k.JKT())
	if got := r.Header.Get("DPoP-Nonce"); got != "" {
		t.Errorf("fresh nonce: DPoP-Nonce %q sent, want none", got)
	}

	rg.clock.Advance(3 * time.Minute) // past half the lifetime, before its end
	r = rg.refreshDPoP(r.str("refresh_token"), rg.proof(k, "/v1/token", dpoptest.WithNonce(nonce)))
	wantDPoPPair(t, "proof with an ageing nonce", r, k.JKT())
	if r.Header.Get("DPoP-Nonce") == "" || r.Header.Get("DPoP-Nonce") == nonce {
		t.Errorf("ageing nonce: DPoP-Nonce %q, want a fresh one", r.Header.Get("DPoP-Nonce"))
	}
	if got := rg.counter("tokengate_refresher_refresh_failures_total", "reason", "use_dpop_nonce"); got != 1 {
		t.Errorf("failures{use_dpop_nonce} = %v, want 1", got)
	}
}

// required: a refresh without a proof is invalid_dpop_proof even for an
// unbound session, and a sign-in without a key is refused naming DPoP.
func TestDPoPRequired(t *testing.T) {
	t.Parallel()
	st := memstore.New()
	clock := fakeclock.New()
	optional := newRig(t, withStore(st), withClock(clock))
	unbound := optional.startSession("").str("refresh_token")
	rg := newRig(t, withStore(st), withClock(clock), withConfig(func(c *refresher.Config) { c.DPoP = refresher.DPoPRequired }))

	wantError(t, "refresh without a proof", rg.refreshDPoP(unbound, ""), http.StatusBadRequest, "invalid_dpop_proof")
	r := rg.signIn(`{"sub":"alice"}`, "")
	wantError(t, "sign-in without a key", r, http.StatusBadRequest, "invalid_request")
	if !strings.Contains(r.str("error_description"), "DPoP") {
		t.Errorf("description %q does not name DPoP", r.str("error_description"))
	}
	// The roll-out path: the unbound session is bound by its first proof.
	k := dpoptest.NewKey(t, "ES256")
	r = rg.refreshDPoP(unbound, rg.proof(k, "/v1/token"))
	wantDPoPPair(t, "unbound session with a proof", r, k.JKT())
	wantError(t, "after binding, without the key", optional.refreshDPoP(r.str("refresh_token"), ""), http.StatusBadRequest, "invalid_grant")
}

// optional: an unbound session refreshes without a proof (Bearer) and is
// bound by its first refresh with one.
func TestDPoPOptionalBindsOnRefresh(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	first := rg.startSession("")
	if first.str("token_type") != "Bearer" || cnf(t, first.str("access_token")) != nil {
		t.Fatalf("unbound sign-in: token_type %q, cnf %v", first.str("token_type"), cnf(t, first.str("access_token")))
	}
	r := rg.refreshDPoP(first.str("refresh_token"), "")
	if r.Status != http.StatusOK || r.str("token_type") != "Bearer" {
		t.Fatalf("unbound refresh without a proof = %d %s", r.Status, r.Raw)
	}
	k := dpoptest.NewKey(t, "ES256")
	r = rg.refreshDPoP(r.str("refresh_token"), rg.proof(k, "/v1/token"))
	wantDPoPPair(t, "first refresh with a proof", r, k.JKT())
	if got := rg.session(first.str("session_id")).JKT; got != k.JKT() {
		t.Errorf("session jkt %q, want %q", got, k.JKT())
	}
	wantError(t, "then without a proof", rg.refreshDPoP(r.str("refresh_token"), ""), http.StatusBadRequest, "invalid_grant")
}

// off: the DPoP header is ignored (tokens stay Bearer, nothing is bound),
// but a session bound earlier never downgrades: it cannot be refreshed.
func TestDPoPOffBoundSessionNeverDowngrades(t *testing.T) {
	t.Parallel()
	st := memstore.New()
	clock := fakeclock.New()
	on := newRig(t, withStore(st), withClock(clock))
	k := dpoptest.NewKey(t, "ES256")
	bound := on.startBound(k).str("refresh_token")
	off := newRig(t, withStore(st), withClock(clock), withConfig(func(c *refresher.Config) { c.DPoP = refresher.DPoPOff }))

	wantError(t, "bound session under off, with a proof", off.refreshDPoP(bound, off.proof(k, "/v1/token")), http.StatusBadRequest, "invalid_grant")
	wantError(t, "bound session under off, without", off.refreshDPoP(bound, ""), http.StatusBadRequest, "invalid_grant")

	s := off.signIn(`{"sub":"bob","dpop_jkt":"`+k.JKT()+`"}`, off.proof(k, "/v1/sessions"))
	if s.Status != http.StatusCreated || s.str("token_type") != "Bearer" || cnf(t, s.str("access_token")) != nil {
		t.Fatalf("sign-in under off = %d %s, want an unbound Bearer pair", s.Status, s.Raw)
	}
	r := off.refreshDPoP(s.str("refresh_token"), off.proof(k, "/v1/token"))
	if r.Status != http.StatusOK || r.str("token_type") != "Bearer" || cnf(t, r.str("access_token")) != nil {
		t.Fatalf("refresh with a proof under off = %d %s, want a Bearer pair", r.Status, r.Raw)
	}
	if got := off.session(s.str("session_id")).JKT; got != "" {
		t.Errorf("session bound to %q under off", got)
	}
	if strings.Contains(off.do(off.request("GET", "/.well-known/openid-configuration", "", "")).Raw, "dpop_signing_alg_values_supported") {
		t.Error("metadata advertises DPoP while it is off")
	}
}

// Sign-in with the browser's proof forwarded by the login backend: its htu
// must be a configured sign-in URL (or the refresher's own /v1/sessions),
// its htm POST; dpop_jkt alone binds too; both must agree.
func TestDPoPSignin(t *testing.T) {
	t.Parallel()
	const login = "https://app.test/login"
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.DPoPSigninURLs = []string{"HTTPS://App.Test:443/login"} }))
	k, other := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
	at := dpoptest.WithIAT(rg.clock.Now())

	wantDPoPPair(t, "forwarded proof for the login URL", rg.signIn(`{"sub":"alice"}`, k.Proof("POST", login, at)), k.JKT())
	wantDPoPPair(t, "forwarded proof for /v1/sessions", rg.signIn(`{"sub":"alice"}`, rg.proof(k, "/v1/sessions")), k.JKT())
	wantDPoPPair(t, "dpop_jkt", rg.signIn(`{"sub":"alice","dpop_jkt":"`+k.JKT()+`"}`, ""), k.JKT())
	wantDPoPPair(t, "proof and the same dpop_jkt", rg.signIn(`{"sub":"alice","dpop_jkt":"`+k.JKT()+`"}`, k.Proof("POST", login, at)), k.JKT())

	r := rg.signIn(`{"sub":"alice","dpop_jkt":"`+other.JKT()+`"}`, k.Proof("POST", login, at))
	wantError(t, "proof and another dpop_jkt", r, http.StatusBadRequest, "invalid_request")
	if !strings.HasPrefix(r.str("error_description"), "dpop_jkt:") {
		t.Errorf("description %q does not name dpop_jkt", r.str("error_description"))
	}
	r = rg.signIn(`{"sub":"alice","dpop_jkt":"short"}`, "")
	wantError(t, "malformed dpop_jkt", r, http.StatusBadRequest, "invalid_request")
	if !strings.HasPrefix(r.str("error_description"), "dpop_jkt:") {
		t.Errorf("description %q does not name dpop_jkt", r.str("error_description"))
	}
	wantError(t, "proof for another URL", rg.signIn(`{"sub":"alice"}`, k.Proof("POST", "https://evil.test/login", at)), http.StatusBadRequest, "invalid_dpop_proof")
	wantError(t, "proof for GET", rg.signIn(`{"sub":"alice"}`, k.Proof("GET", login, at)), http.StatusBadRequest, "invalid_dpop_proof")
	p := k.Proof("POST", login, at)
	wantDPoPPair(t, "fresh proof", rg.signIn(`{"sub":"alice"}`, p), k.JKT())
	wantError(t, "the same proof again", rg.signIn(`{"sub":"alice"}`, p), http.StatusBadRequest, "invalid_dpop_proof")
	wantError(t, "cnf in the session claims", rg.signIn(`{"sub":"alice","claims":{"cnf":{"jkt":"x"}}}`, ""), http.StatusBadRequest, "invalid_request")
}

// device_id and client_ip at sign-in: cnf.dev is the identifier's SHA-256
// (never the identifier), in every token; with network binding cnf.ip is
// the login backend's client_ip at sign-in and the refresh request's
// address afterwards.
func TestDPoPDeviceAndNetworkClaims(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.BindNetwork = true }))
	const device = "device-7f3a-secret-identifier"
	sum := sha256.Sum256([]byte(device))
	wantDev := base64.RawURLEncoding.EncodeToString(sum[:])

	first := rg.signIn(`{"sub":"alice","device_id":"`+device+`","client_ip":"::ffff:203.0.113.7"}`, "")
	if first.Status != http.StatusCreated {
		t.Fatalf("sign-in = %d %s", first.Status, first.Raw)
	}
	c := cnf(t, first.str("access_token"))
	if c["dev"] != wantDev || c["ip"] != "203.0.113.7" || c["jkt"] != nil {
		t.Errorf("sign-in cnf = %v, want dev %s and ip 203.0.113.7", c, wantDev)
	}
	if first.str("token_type") != "Bearer" {
		t.Errorf("token_type %q for a token bound to a device only, want Bearer", first.str("token_type"))
	}
	if s := rg.session(first.str("session_id")); s.Device != wantDev {
		t.Errorf("stored device %q, want the hash %q", s.Device, wantDev)
	}
	if strings.Contains(first.Raw, device) {
		t.Error("the raw device identifier appears in the answer")
	}
	r := rg.refreshDPoP(first.str("refresh_token"), "")
	if c := cnf(t, r.str("access_token")); c["dev"] != wantDev || c["ip"] != "127.0.0.1" {
		t.Errorf("refresh cnf = %v, want dev %s and ip 127.0.0.1 (the refresh's address)", c, wantDev)
	}

	for body, field := range map[string]string{
		`{"sub":"a","device_id":"` + strings.Repeat("d", 257) + `"}`: "device_id:",
		`{"sub":"a","client_ip":"not-an-ip"}`:                        "client_ip:",
	} {
		r := rg.signIn(body, "")
		wantError(t, field, r, http.StatusBadRequest, "invalid_request")
		if !strings.HasPrefix(r.str("error_description"), field) {
			t.Errorf("description %q does not start with %s", r.str("error_description"), field)
		}
	}
	// Without network binding there is no cnf.ip.
	plain := newRig(t)
	s := plain.signIn(`{"sub":"alice","client_ip":"203.0.113.7"}`, "")
	if c := cnf(t, s.str("access_token")); c != nil {
		t.Errorf("cnf = %v without network binding or device, want none", c)
	}
}

// ExternalURL: the htu of a refresh proof is the browser's URL, not the
// address the refresher was reached at.
func TestDPoPExternalURL(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.ExternalURL = "https://app.test/auth/" }))
	k := dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(k).str("refresh_token")
	wantError(t, "proof for the internal address", rg.refreshDPoP(tok, rg.proof(k, "/v1/token")), http.StatusBadRequest, "invalid_dpop_proof")
	r := rg.refreshDPoP(tok, k.Proof("POST", "https://app.test/auth/v1/token", dpoptest.WithIAT(rg.clock.Now())))
	wantDPoPPair(t, "proof for the external URL", r, k.JKT())
}

// Browsers may send the DPoP header and read DPoP-Nonce cross-origin.
func TestDPoPCORS(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.CORSAllowedOrigins = []string{"https://app.test"} }))
	r := rg.do(rg.request("OPTIONS", "/v1/token", "", "", "Origin", "https://app.test",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "dpop"))
	if !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "DPoP") {
		t.Errorf("Access-Control-Allow-Headers %q lacks DPoP", r.Header.Get("Access-Control-Allow-Headers"))
	}
	if !strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "DPoP-Nonce") {
		t.Errorf("Access-Control-Expose-Headers %q lacks DPoP-Nonce", r.Header.Get("Access-Control-Expose-Headers"))
	}
}

// Storm: the owner's tabs refresh one bound token at once, each with a
// fresh proof, while a thief with another key sends the same token. There
// is exactly one rotation, every owner request gets the same pair, and
// every thief request is invalid_grant without it. Not parallel with the
// package's other tests: it would share the machine with TestStorm's 500
// requests, and a loaded store answering late is a 503, not what this tests.
func TestDPoPStorm(t *testing.T) {
	for _, kind := range []string{"memory", "bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dpopStorm(t, newRig(t, withStore(openStore(t, kind))))
		})
	}
}

func dpopStorm(t *testing.T, rg *rig) {
	const owners, thieves = 100, 20
	owner, thief := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
	first := rg.startBound(owner)
	tok := first.str("refresh_token")
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}.Encode()
	reqs := make([]*http.Request, owners+thieves)
	for i := range reqs {
		k := owner
		if i >= owners {
			k = thief
		}
		req, _ := http.NewRequestWithContext(context.Background(), "POST", rg.http.URL+"/v1/token", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", rg.proof(k, "/v1/token"))
		reqs[i] = req
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(reqs), MaxConnsPerHost: len(reqs)}}
	defer client.CloseIdleConnections()
	type answer struct {
		status int
		raw    string
	}
	got := make([]answer, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Do(req)
			if err != nil {
				got[i] = answer{raw: err.Error()}
				return
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			got[i] = answer{resp.StatusCode, buf.String()}
		}()
	}
	close(start)
	wg.Wait()
	var pair string
	for i, a := range got {
		if i >= owners {
			if a.status != http.StatusBadRequest || extract(a.raw, "error") != "invalid_grant" {
				t.Fatalf("thief %d = %d %s, want 400 invalid_grant", i, a.status, a.raw)
			}
			continue
		}
		if a.status != http.StatusOK || extract(a.raw, "token_type") != "DPoP" {
			t.Fatalf("owner %d = %d %s", i, a.status, a.raw)
		}
		rt := extract(a.raw, "refresh_token")
		if pair == "" {
			pair = rt
		}
		if rt != pair || rt == tok {
			t.Fatalf("owner %d got another refresh token", i)
		}
	}
	for i := owners; i < len(got); i++ {
		if strings.Contains(got[i].raw, pair) {
			t.Fatalf("thief %d got the owner's refresh token", i)
		}
	}
	if n := rg.counter("tokengate_refresher_rotations_total"); n != 1 {
		t.Errorf("rotations = %v, want exactly 1", n)
	}
	if s := rg.session(first.str("session_id")); s.Generation != 1 || !s.RevokedAt.IsZero() {
		t.Errorf("session: generation %d, revoked %v; want 1, active", s.Generation, s.RevokedAt)
	}
}

// A thief holding a bound refresh token but not the key cannot spend the
// session's rate-limit budget: the owner still refreshes.
func TestDPoPThiefDoesNotSpendSessionBudget(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RateLimitSession, c.RateLimitSessionBurst = 0.01, 1 // one rotation, no refill during the test
	}))
	owner, thief := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
	tok := rg.startBound(owner).str("refresh_token")
	for range 3 {
		wantError(t, "thief", rg.refreshDPoP(tok, rg.proof(thief, "/v1/token")), http.StatusBadRequest, "invalid_grant")
	}
	wantDPoPPair(t, "owner after the thief's attempts", rg.refreshDPoP(tok, rg.proof(owner, "/v1/token")), owner.JKT())
}

// Two replicas on one store: A rotates a bound token; on B, which does not
// remember the pair, the store decides the replay: a thief's key gets
// invalid_grant, the owner's key the same pair, on every backend.
func TestDPoPReplayAcrossReplicas(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"memory", "bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			st := openStore(t, kind)
			clock := fakeclock.New()
			a := newRig(t, withStore(st), withClock(clock))
			b := newRig(t, withStore(st), withClock(clock), withKeys(a.keys))
			owner, thief := dpoptest.NewKey(t, "ES256"), dpoptest.NewKey(t, "ES256")
			tok := a.startBound(owner).str("refresh_token")
			r1 := a.refreshDPoP(tok, a.proof(owner, "/v1/token"))
			wantDPoPPair(t, "rotation on A", r1, owner.JKT())
			clock.Advance(time.Second)
			wantError(t, "thief on B", b.refreshDPoP(tok, b.proof(thief, "/v1/token")), http.StatusBadRequest, "invalid_grant")
			wantError(t, "no proof on B", b.refreshDPoP(tok, ""), http.StatusBadRequest, "invalid_grant")
			r2 := b.refreshDPoP(tok, b.proof(owner, "/v1/token"))
			wantDPoPPair(t, "owner's replay on B", r2, owner.JKT())
			if r2.str("refresh_token") != r1.str("refresh_token") {
				t.Error("owner's replay on B got another refresh token")
			}
			if got := b.counter("tokengate_refresher_replays_total", "source", "store"); got != 1 {
				t.Errorf("B replays{store} = %v, want 1", got)
			}
		})
	}
}
