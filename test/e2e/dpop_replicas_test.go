package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/proctest"
)

// TestDPoPAcrossReplicas pins down what docs/dpop.md promises for several
// extauthz replicas: replicas that share dpop.nonce.secret_file accept each
// other's nonces, a replica with another secret does not; each replica
// refuses a proof it has seen; and the replay cache is per replica, so a
// captured proof is accepted once by each other replica within max_age —
// the documented bound, which nonces and a short max_age narrow.
func TestDPoPAcrossReplicas(t *testing.T) {
	redis := proctest.StartRedis(t)
	ref := startRefresher(t, "refresher", redis.Addr, signingKey(t), "--dpop", "optional")
	const origin = "https://app.e2e.test"
	dir := t.TempDir()
	secret := func(name string) string {
		b := make([]byte, 32)
		rand.Read(b)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	shared, foreign := secret("shared"), secret("foreign")
	cfg := func(secretFile string) string {
		return fmt.Sprintf(refresherProvider(ref)+`dpop:
  external_origin: %s
  nonce: {enabled: true, secret_file: %s}
`, origin, secretFile)
	}
	a := startExtauthzConfig(t, "extauthz-a", cfg(shared))
	b := startExtauthzConfig(t, "extauthz-b", cfg(shared))
	c := startExtauthzConfig(t, "extauthz-c", cfg(foreign))

	key := dpoptest.NewKey(t, "ES256")
	s := signIn(t, ref, "replicated", map[string]any{"dpop_jkt": key.JKT()})
	check := func(addr, proof string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/authz/api/orders", nil)
		req.Header.Set("Authorization", "DPoP "+s.AccessToken)
		req.Header.Set("DPoP", proof)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), resp.Header.Get("DPoP-Nonce")
	}
	htu := origin + "/api/orders"
	proof := func(nonce string) string {
		return key.Proof(http.MethodGet, htu, dpoptest.WithATH(s.AccessToken), dpoptest.WithNonce(nonce))
	}
	want := func(what string, gotStatus int, www string, wantStatus int, wantReason string) {
		t.Helper()
		if gotStatus != wantStatus || (wantReason != "" && !strings.Contains(www, wantReason)) {
			t.Fatalf("%s = %d %q, want %d %s", what, gotStatus, www, wantStatus, wantReason)
		}
	}

	// A hands out a nonce; B, sharing the secret, accepts it.
	st, www, nonce := check(a, key.Proof(http.MethodGet, htu, dpoptest.WithATH(s.AccessToken)))
	want("A without a nonce", st, www, http.StatusUnauthorized, "use_dpop_nonce")
	if nonce == "" {
		t.Fatal("A's use_dpop_nonce answer has no DPoP-Nonce")
	}
	p := proof(nonce)
	st, www, _ = check(b, p)
	want("B with A's nonce", st, www, http.StatusOK, "")
	// The same proof again at B: a replay.
	st, www, _ = check(b, p)
	want("the proof again at B", st, www, http.StatusUnauthorized, "invalid_dpop_proof")
	// At A, which has not seen it: accepted once (the documented per-replica window)…
	st, www, _ = check(a, p)
	want("the proof at A, which has not seen it", st, www, http.StatusOK, "")
	// …and then refused there too.
	st, www, _ = check(a, p)
	want("the proof again at A", st, www, http.StatusUnauthorized, "invalid_dpop_proof")
	// A replica with another nonce secret does not take the nonce: the proof is useless there.
	st, www, _ = check(c, p)
	want("the proof at C (another nonce secret)", st, www, http.StatusUnauthorized, "use_dpop_nonce")
}
