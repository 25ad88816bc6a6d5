package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/proctest"
)

// TestDPoPThroughNginx: a DPoP-bound session used through the real nginx
// example (forward-auth to extauthz, /v1/token to the refresher), with
// extauthz's server nonces on. nginx must carry the proof to both
// services and extauthz's DPoP-Nonce back to the client (auth_request
// passes only WWW-Authenticate of a denial by itself); the proofs' htu is
// the public origin, which both services are given because nginx passes
// $host without its port.
func TestDPoPThroughNginx(t *testing.T) {
	bin := proctest.RequireBinary(t, "nginx", "apt-get install -y nginx")
	redis := proctest.StartRedis(t)
	port := proctest.FreePort(t)
	origin := "http://127.0.0.1:" + strconv.Itoa(port)
	ref := startRefresher(t, "refresher", redis.Addr, signingKey(t),
		"--dpop", "optional", "--external-url", origin, "--client-ip-header", "X-Forwarded-For")
	authz := startExtauthzConfig(t, "extauthz", fmt.Sprintf(refresherProvider(ref)+`dpop:
  external_origin: %s
  nonce: {enabled: true}
routes:
  - {path_prefix: /api/public/, action: public}
  - {path_prefix: /api/, action: required, dpop: required}
forward_auth:
  proxy: nginx
`, origin))
	app := newRecordingApp(t)
	base, _ := startNginxOn(t, bin, port, authz, ref, app)

	key := dpoptest.NewKey(t, "ES256")
	// The login backend verified the browser's proof itself and passes its thumbprint.
	s := signIn(t, ref, "holder", map[string]any{"dpop_jkt": key.JKT()})
	if s.TokenType != "DPoP" {
		t.Fatalf("token_type at sign-in = %q, want DPoP", s.TokenType)
	}
	if got := cnfOf(t, s.AccessToken)["jkt"]; got != key.JKT() {
		t.Fatalf("cnf.jkt = %v, want the key's thumbprint", got)
	}

	type reply struct {
		status      int
		www, nonce  string
		appRequests int
	}
	call := func(id, token, proof string) reply {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/api/"+id, nil)
		req.Header.Set("Authorization", "DPoP "+token)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		req.Header.Set("X-Test-Case", id)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET /api/%s: %v", id, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return reply{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Header.Get("DPoP-Nonce"), len(app.take(id))}
	}
	u := func(id string) string { return origin + "/api/" + id }

	// 1. No nonce yet: use_dpop_nonce, and the nonce reaches the client through nginx.
	r := call("first", s.AccessToken, key.Proof(http.MethodGet, u("first"), dpoptest.WithATH(s.AccessToken)))
	if r.status != http.StatusUnauthorized || !strings.Contains(r.www, "use_dpop_nonce") || r.nonce == "" || r.appRequests != 0 {
		t.Fatalf("first call = %+v, want 401 use_dpop_nonce with a DPoP-Nonce header", r)
	}
	nonce := r.nonce

	// 2. With the nonce: allowed, the app sees the identity.
	proof := key.Proof(http.MethodGet, u("second"), dpoptest.WithATH(s.AccessToken), dpoptest.WithNonce(nonce))
	if r := call("second", s.AccessToken, proof); r.status != http.StatusOK || r.appRequests != 1 {
		t.Fatalf("call with the nonce = %+v, want 200", r)
	}
	// 3. The same proof again: a replay.
	if r := call("second", s.AccessToken, proof); r.status != http.StatusUnauthorized || !strings.Contains(r.www, "invalid_dpop_proof") || r.appRequests != 0 {
		t.Fatalf("replayed proof = %+v, want 401 invalid_dpop_proof", r)
	}
	// 4. Another key, or the token as Bearer: refused, the app sees nothing.
	thief := dpoptest.NewKey(t, "ES256")
	if r := call("thief", s.AccessToken, thief.Proof(http.MethodGet, u("thief"), dpoptest.WithATH(s.AccessToken), dpoptest.WithNonce(nonce))); r.status != http.StatusUnauthorized || r.appRequests != 0 {
		t.Fatalf("another key's proof = %+v, want 401", r)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/bearer", nil)
	req.Header.Set("Authorization", "Bearer "+s.AccessToken)
	req.Header.Set("X-Test-Case", "bearer")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized || len(app.take("bearer")) != 0 {
		t.Fatalf("as Bearer = %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}

	// 5. Refresh through nginx: the proof's htu is the public /v1/token.
	refreshWith := func(proof string) answer {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.RefreshToken}}
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		return do(req)
	}
	if a := refreshWith(""); a.Status != http.StatusBadRequest || a.Body.Error != "invalid_grant" {
		t.Fatalf("refresh without a proof = %v, want 400 invalid_grant", a)
	}
	if a := refreshWith(thief.Proof(http.MethodPost, origin+"/v1/token")); a.Status != http.StatusBadRequest || a.Body.Error != "invalid_grant" {
		t.Fatalf("refresh with another key's proof = %v, want 400 invalid_grant", a)
	}
	a := refreshWith(key.Proof(http.MethodPost, origin+"/v1/token"))
	if a.Status != http.StatusOK || a.Body.TokenType != "DPoP" || cnfOf(t, a.Body.AccessToken)["jkt"] != key.JKT() {
		t.Fatalf("refresh with the key's proof = %v (token_type %q), want 200 bound to the same key", a, a.Body.TokenType)
	}
	next := a.Body.AccessToken
	if r := call("after", next, key.Proof(http.MethodGet, u("after"), dpoptest.WithATH(next), dpoptest.WithNonce(nonce))); r.status != http.StatusOK || r.appRequests != 1 {
		t.Fatalf("call with the refreshed token = %+v, want 200", r)
	}
}
