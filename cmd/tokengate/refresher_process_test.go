package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/proctest"
)

// Configuration problems are all reported at once, as a usage error (exit 2).
func TestRefresherConfigErrors(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"refresher", "--store", "memory://", "--access-ttl", "0s",
		"--refresh-token-transport", "smoke", "--cors-allowed-origins", "*"},
		func(string) string { return "" }, io.Discard, &stderr)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v; want a usage error", err)
	}
	for _, want := range []string{"signing-key:", "issuer:", "audience:", "admin-token:", "access-ttl:",
		"refresh-token-transport:", "cors-allowed-origins[0]:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Env vars configure the same flags.
	err = run(context.Background(), []string{"refresher", "--store", "memory://"},
		func(k string) string {
			return map[string]string{"TOKENGATE_ISSUER": "https://auth.example", "TOKENGATE_AUDIENCE": "api",
				"TOKENGATE_ADMIN_TOKEN": "0123456789abcdef0123", "TOKENGATE_SIGNING_KEY": "/nonexistent/key.pem"}[k]
		}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "read signing key") {
		t.Fatalf("with env config, err = %v; want only the missing key file", err)
	}
}

// startRefresher runs `tokengate refresher --dev` on a bolt file in dir.
func startRefresher(t *testing.T, dir string, extra ...string) (*proctest.Process, string) {
	t.Helper()
	port := proctest.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"refresher", "--dev", "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--store", "bolt://" + filepath.Join(dir, "tokengate.db"), "--issuer", "https://auth.test", "--audience", "api"}, extra...)
	p := proctest.Start(t, "refresher", nil, proctest.Tokengate(t), args...)
	p.WaitHTTP(t, base+"/readyz", http.StatusOK, 20*time.Second)
	return p, base
}

type pairJSON struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	SessionID    string `json:"session_id"`
	Error        string `json:"error"`
}

func postJSON(t *testing.T, method, u, auth, contentType, body string) (int, pairJSON, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var p pairJSON
	_ = json.Unmarshal(raw, &p)
	return resp.StatusCode, p, resp.Header
}

func refreshForm(token string) string {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}.Encode()
}

func readAdminToken(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Restart: a session created, the process stopped and started again on the
// same bolt file, and the refresh still works with the same kept key.
func TestRefresherRestartKeepsSessions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, base := startRefresher(t, dir)
	admin := readAdminToken(t, dir)
	status, first, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"alice"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/sessions = %d", status)
	}
	jwksBefore := get(t, base+"/.well-known/jwks.json")
	if err := p.Stop(t); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, p.Output())
	}

	_, base = startRefresher(t, dir)
	if readAdminToken(t, dir) != admin {
		t.Error("the admin token changed across restarts")
	}
	if after := get(t, base+"/.well-known/jwks.json"); after != jwksBefore {
		t.Errorf("the dev key changed across restarts:\n%s\n%s", jwksBefore, after)
	}
	status, next, _ := postJSON(t, "POST", base+"/v1/token", "", "application/x-www-form-urlencoded", refreshForm(first.RefreshToken))
	if status != http.StatusOK || next.SessionID != first.SessionID || next.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh after restart = %d %+v", status, next)
	}
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := testClient.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Integration over real HTTP between processes: sessions → token →
// `tokengate extauthz --jwks-url` (pointing at the refresher) accepts the
// access token → revoke ends the session.
func TestRefresherWithExtauthz(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, base := startRefresher(t, dir)
	admin := readAdminToken(t, dir)

	httpPort, grpcPort := proctest.FreePort(t), proctest.FreePort(t)
	authz := "http://127.0.0.1:" + strconv.Itoa(httpPort)
	ext := proctest.Start(t, "extauthz", []string{"TOKENGATE_ADMIN_TOKEN=" + admin}, proctest.Tokengate(t), "extauthz",
		"--http-listen", "127.0.0.1:"+strconv.Itoa(httpPort), "--grpc-listen", "127.0.0.1:"+strconv.Itoa(grpcPort),
		"--jwks-url", base+"/.well-known/jwks.json", "--issuer", "https://auth.test", "--audience", "api",
		"--revocations-url", base)
	ext.WaitHTTP(t, authz+"/readyz", http.StatusOK, 20*time.Second)

	status, first, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json",
		`{"sub":"alice","claims":{"name":"Alice","roles":["admin","dev"]}}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/sessions = %d", status)
	}
	check := func(token string) (int, http.Header) {
		t.Helper()
		status, _, hdr := postJSON(t, "GET", authz+"/authz/api/orders", token, "", "")
		return status, hdr
	}
	if status, hdr := check(first.AccessToken); status != http.StatusOK || hdr.Get("x-user-id") != "alice" ||
		hdr.Get("x-user-roles") != "admin,dev" || hdr.Get("x-session-id") != first.SessionID {
		t.Fatalf("extauthz on the first access token = %d %v", status, hdr)
	}
	status, next, _ := postJSON(t, "POST", base+"/v1/token", "", "application/x-www-form-urlencoded", refreshForm(first.RefreshToken))
	if status != http.StatusOK {
		t.Fatalf("refresh = %d", status)
	}
	if status, hdr := check(next.AccessToken); status != http.StatusOK || hdr.Get("x-user-name") != "Alice" {
		t.Fatalf("extauthz on the refreshed access token = %d %v", status, hdr)
	}
	if status, _ := check(next.AccessToken + "x"); status != http.StatusUnauthorized {
		t.Errorf("a tampered token = %d, want 401", status)
	}
	revokedWord := func(token string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", authz+"/authz/api/orders", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body.Error
	}
	if status, _, _ := postJSON(t, "POST", base+"/v1/revoke", "", "application/x-www-form-urlencoded", "token="+next.RefreshToken); status != http.StatusOK {
		t.Fatalf("revoke = %d", status)
	}
	if status, p, _ := postJSON(t, "POST", base+"/v1/token", "", "application/x-www-form-urlencoded", refreshForm(next.RefreshToken)); status != http.StatusBadRequest || p.Error != "invalid_grant" {
		t.Fatalf("refresh after revoke = %d %+v", status, p)
	}
	// extauthz learns of the sign-out from the feed (long-poll) and refuses
	// the still-unexpired access token with token_revoked.
	waitFor(t, func() bool { return revokedWord(next.AccessToken) == "token_revoked" })
	feed := get(t, base+"/v1/revocations?wait=0")
	if !strings.Contains(feed, "invalid_token") {
		t.Errorf("the feed answered without the admin token: %s", feed)
	}
	req, _ := http.NewRequest("GET", base+"/v1/revocations?wait=0", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"sid":"`+first.SessionID+`"`) {
		t.Errorf("the revocation feed lacks the session: %s", raw)
	}
}

// SIGHUP re-reads --signing-key: the documented rotation procedure without
// restarts. Step 1 publishes the next key, step 2 switches the signer.
func TestRefresherReloadsKeysOnHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldKey, newKey := genKey(t), genKey(t)
	keyFile := filepath.Join(dir, "keys.json")
	writeKeySet(t, keyFile, oldKey)
	admin := "0123456789abcdef0123456789"
	p, base := startRefresher(t, dir, "--signing-key", keyFile, "--admin-token", admin)

	writeKeySet(t, keyFile, oldKey, newKey) // 1. publish next; the old key (first) still signs
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(get(t, base+"/.well-known/jwks.json"), kidOf(newKey)) })
	_, s, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"alice"}`)
	if kid := headerKID(t, s.AccessToken); kid != kidOf(oldKey) {
		t.Fatalf("after publishing: signed by %s, want the old key", kid)
	}

	writeKeySet(t, keyFile, newKey, oldKey) // 2. switch the signer; the old key stays published
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, s, _ = postJSON(t, "POST", base+"/v1/token", "", "application/x-www-form-urlencoded", refreshForm(s.RefreshToken))
		return headerKID(t, s.AccessToken) == kidOf(newKey)
	})
	if !strings.Contains(get(t, base+"/.well-known/jwks.json"), kidOf(oldKey)) {
		t.Error("the old key was unpublished at the switch")
	}
}

// waitFor polls an asynchronous effect (a signal handled by another
// process) until it shows, failing after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func genKey(t *testing.T) jwk.Key {
	t.Helper()
	k, err := keyset.Generate(jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func kidOf(k jwk.Key) string { kid, _ := k.KeyID(); return kid }

func writeKeySet(t *testing.T, path string, keys ...jwk.Key) {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		set.AddKey(k)
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := keyset.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func headerKID(t *testing.T, token string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		return ""
	}
	var hdr struct {
		KID string `json:"kid"`
	}
	json.Unmarshal(h, &hdr)
	return hdr.KID
}
