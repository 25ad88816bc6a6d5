package extauthz

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAdversarial: every one of these must be refused. The JWKS URL counts
// requests, so a token that makes us fetch anything (jku, x5u, jwk, or a
// junk kid beyond its one rate-limited refetch) fails the test.
func TestAdversarial(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	rs := newTestKey(t, "RS256", "rs-1")
	evil := newTestKey(t, "ES256", "evil")

	var elsewhere atomic.Int32
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		w.Write(jwks(t, evil))
	}))
	t.Cleanup(attacker.Close)
	js := newJWKSServer(t, jwks(t, es, rs))

	cfg := waitingConfig(js.URL) // each junk kid gets its refetch's verdict, invalid_token
	cfg.Providers[0].HMACSecret = strings.Repeat("k", 32)
	cfg.Providers[0].Algorithms = append(append([]string(nil), DefaultAlgorithms...), "HS256")
	h := newHarness(t, cfg)
	waitReady(t, h.srv)
	fetchesAtStart := js.hits.Load()
	now := h.clock.Now()
	good := claimsAt(now)
	payload := []byte(mustJSON(t, good))
	// The RSA public key as an attacker would use it for HS256: PEM (the
	// classic attack) and the JWK JSON.
	rsaPubJSON := mustJSON(t, rs.pub)
	der, err := x509.MarshalPKIXPublicKey(&rs.priv.(*rsa.PrivateKey).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	evilJWK := mustJSON(t, evil.pub)
	cases := []struct {
		name  string
		token string
		want  string
	}{
		{"alg none", signRaw(t, "none", nil, map[string]any{"alg": "none", "kid": "es-1"}, payload), "invalid_token"},
		{"alg NoNe", signRaw(t, "none", nil, map[string]any{"alg": "NoNe"}, payload), "invalid_token"},
		{"HS256 signed with the RSA public key (PEM)", signRaw(t, "HS256", rsaPubPEM, map[string]any{"alg": "HS256", "kid": "rs-1"}, payload), "invalid_token"},
		{"HS256 signed with the RSA public key (JWK)", signRaw(t, "HS256", []byte(rsaPubJSON), map[string]any{"alg": "HS256", "kid": "rs-1"}, payload), "invalid_token"},
		{"unknown kid", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "nope"}, good), "invalid_token"},
		{"kid with path characters", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "../../../../etc/passwd"}, good), "invalid_token"},
		{"kid with control characters", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "a\x00\r\nb"}, good), "invalid_token"},
		{"jku elsewhere", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "evil", "jku": attacker.URL}, good), "invalid_token"},
		{"x5u elsewhere", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "evil", "x5u": attacker.URL}, good), "invalid_token"},
		{"embedded jwk", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "jwk": jsonRaw(evilJWK)}, good), "invalid_token"},
		{"embedded jwk with our kid", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "es-1", "jwk": jsonRaw(evilJWK)}, good), "invalid_token"},
		{"unknown crit", es.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "es-1", "crit": []string{"exp-ext"}, "exp-ext": 1}, good), "invalid_token"},
		{"1 MiB token", strings.Repeat("a", 1<<20), "invalid_token"},
		{"malformed base64 header", "!!!." + b64(payload) + ".sig", "invalid_token"},
		{"malformed base64 payload", b64([]byte(`{"alg":"ES256","kid":"es-1"}`)) + ".%%%.sig", "invalid_token"},
		{"malformed JSON header", b64([]byte(`{"alg":`)) + "." + b64(payload) + ".c2ln", "invalid_token"},
		{"malformed JSON payload", es.tokenRawPayload(t, []byte(`{"sub":`)), "invalid_token"},
		{"payload is an array", es.tokenRawPayload(t, []byte(`[1,2]`)), "invalid_token"},
		{"two JSON values", es.tokenRawPayload(t, append(append([]byte(nil), payload...), payload...)), "invalid_token"},
		{"too few segments", "a.b", "invalid_token"},
		{"too many segments", "a.b.c.d", "invalid_token"},
		{"JWE-shaped", "a.b.c.d.e", "invalid_token"},
		{"signature stripped", strings.Join(strings.Split(es.token(t, good), ".")[:2], ".") + ".", "invalid_token"},
		{"signature of another key", evil.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "es-1"}, good), "invalid_token"},
		{"alg switched to ES384 on an ES256 key", es.tokenWithHeader(t, map[string]any{"alg": "ES384", "kid": "es-1"}, good), "invalid_token"},
		{"wrong iss", es.token(t, with(good, "iss", "https://evil.test")), "invalid_token"},
		{"iss missing", es.token(t, without(good, "iss")), "invalid_token"},
		{"wrong aud", es.token(t, with(good, "aud", "other")), "invalid_token"},
		{"aud missing", es.token(t, without(good, "aud")), "invalid_token"},
		{"exp missing", es.token(t, without(good, "exp")), "invalid_token"},
		{"exp a string", es.token(t, with(good, "exp", "tomorrow")), "invalid_token"},
		{"exp huge", es.token(t, with(good, "exp", 1e300)), "invalid_token"},
		{"nbf in the future", es.token(t, with(good, "nbf", now.Unix()+3600)), "invalid_token"},
		{"name with CR LF", es.token(t, with(good, "name", "x\r\nx-admin: true")), "allow-safe"},
	}
	for _, tc := range cases {
		// Past kid_refetch_min_gap, so an unknown kid is decided by its own
		// refetch rather than answered UNAVAILABLE while it waits for one.
		h.clock.Advance(DefaultKidRefetchMinGap)
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.srv.Check(t.Context(), bearerReq(tc.token))
			if err != nil {
				t.Fatal(err)
			}
			a := flatten(t, resp)
			if tc.want == "allow-safe" {
				// Allowed (the token is genuine), but the value is encoded and no
				// header was injected.
				for name, v := range a.set {
					if strings.ContainsAny(v, "\r\n") || name == "x-admin" {
						t.Fatalf("header injection: %s: %q", name, v)
					}
				}
				if a.set["x-user-name"] != "x%0D%0Ax-admin: true" {
					t.Fatalf("x-user-name %q", a.set["x-user-name"])
				}
				return
			}
			if a.reason() != tc.want {
				t.Fatalf("outcome %s, want %s", a.reason(), tc.want)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("a URL named inside a token was fetched %d times", n)
	}
	// Each distinct plausible unknown kid (nope, the path-like one, evil)
	// costs at most one refetch; the control-character kid none.
	if n := js.hits.Load() - fetchesAtStart; n > 3 {
		t.Fatalf("%d JWKS fetches caused by adversarial tokens, want ≤ 3", n)
	}
}

func (k *testKey) tokenRawPayload(t testing.TB, payload []byte) string {
	return signRaw(t, k.alg, k.priv, map[string]any{"alg": k.alg, "kid": k.kid}, payload)
}

func with(c map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range c {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func without(c map[string]any, k string) map[string]any {
	out := with(c, k, nil)
	delete(out, k)
	return out
}

type jsonRaw string

func (j jsonRaw) MarshalJSON() ([]byte, error) { return []byte(j), nil }
