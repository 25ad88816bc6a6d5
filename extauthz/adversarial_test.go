package extauthz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
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

// segments splits a compact token into its three base64url segments.
func segments(t testing.TB, tok string) (h, p, s string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	return parts[0], parts[1], parts[2]
}

// respell returns tok with its signature segment rewritten by f (the bytes
// stay the same, only the spelling changes).
func respell(t testing.TB, tok string, f func(string) string) string {
	t.Helper()
	h, p, s := segments(t, tok)
	return h + "." + p + "." + f(s)
}

// tokenWhere signs variations of claims (jti-1, jti-2, …) until ok holds for
// the token: a property of a random ECDSA signature (its spelling, its S)
// that a test needs.
func tokenWhere(t testing.TB, k *testKey, claims map[string]any, ok func(string) bool) string {
	t.Helper()
	for i := range 200 {
		tok := k.token(t, with(claims, "jti", "jti-"+strconv.Itoa(i)))
		if ok(tok) {
			return tok
		}
	}
	t.Fatal("no token with the property in 200 tries")
	return ""
}

// setTrailingBit flips the lowest unused bit of a segment's last character:
// the same bytes, another spelling (RFC 4648 §3.5: non-canonical).
func setTrailingBit(t testing.TB, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("segment %q has no unused bits", seg)
	}
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[i|1])
}

// ecOrder is the group order n of the curve of an ES* algorithm.
func ecOrder(alg string) *big.Int {
	switch alg {
	case "ES384":
		return elliptic.P384().Params().N
	case "ES512":
		return elliptic.P521().Params().N
	}
	return elliptic.P256().Params().N
}

// twinS returns the token with its ECDSA signature (r, s) replaced by
// (r, n−s): as valid as the original, another spelling of the same token.
func twinS(t testing.TB, tok, alg string) string {
	t.Helper()
	h, p, s := segments(t, tok)
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	size := len(sig) / 2
	n := ecOrder(alg)
	sv := new(big.Int).SetBytes(sig[size:])
	sv.Sub(n, sv)
	out := append(append([]byte(nil), sig[:size]...), pad(sv, size)...)
	return h + "." + p + "." + b64(out)
}

// highS reports whether the token's ECDSA S is above n/2.
func highS(t testing.TB, tok, alg string) bool {
	t.Helper()
	_, _, s := segments(t, tok)
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	half := new(big.Int).Rsh(ecOrder(alg), 1)
	return new(big.Int).SetBytes(sig[len(sig)/2:]).Cmp(half) > 0
}

// signES256Raw signs exactly these header and payload bytes (tests need
// JSON no encoder would write: duplicate keys).
func signES256Raw(t testing.TB, k *testKey, header, payload string) string {
	t.Helper()
	input := b64([]byte(header)) + "." + b64([]byte(payload))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv.(*ecdsa.PrivateKey), digest(crypto.SHA256, input))
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(append(pad(r, 32), pad(s, 32)...))
}

// TestAdversarialTokenRules: one token has one
// spelling — every segment strict unpadded base64url, canonical trailing
// bits — and an identity needs a string subject; the header and claims
// have no duplicate (or case-variant) keys at any depth. Every row is
// refused as invalid_token.
func TestAdversarialTokenRules(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, es))
	now := h.clock.Now()
	good := claimsAt(now)
	tok := es.token(t, good)
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatalf("the genuine token: %s", got)
	}
	hs, ps, ss := segments(t, tok)
	withStd := tokenWhere(t, es, good, func(tok string) bool { _, _, s := segments(t, tok); return strings.ContainsAny(s, "-_") })
	hdr := `{"alg":"ES256","kid":"es-1","typ":"at+jwt"}`
	payload := func(extra string) string {
		return `{"iss":"` + testIssuer + `","aud":"` + testAudience + `","sub":"user-1","sid":"sess-1","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + extra + `}`
	}
	if got := h.check(t, bearerReq(signES256Raw(t, es, hdr, payload("")))).reason(); got != "allow" {
		t.Fatalf("the hand-made token: %s", got)
	}
	cases := []struct{ name, token string }{
		{"signature in the standard alphabet", respell(t, withStd, func(s string) string {
			return strings.NewReplacer("-", "+", "_", "/").Replace(s)
		})},
		{"signature padded", tok + strings.Repeat("=", (4-len(ss)%4)%4)},
		{"signature with one = too many", tok + "="},
		{"signature with a non-zero trailing bit", respell(t, tok, func(s string) string { return setTrailingBit(t, s) })},
		{"signature with a line break", respell(t, tok, func(s string) string { return s[:10] + "\n" + s[10:] })},
		{"signature with a carriage return", respell(t, tok, func(s string) string { return s[:10] + "\r" + s[10:] })},
		{"header padded", hs + "=." + ps + "." + ss},
		{"header with a non-zero trailing bit", setTrailingBit(t, hs) + "." + ps + "." + ss},
		{"payload with a non-zero trailing bit", hs + "." + setTrailingBit(t, ps) + "." + ss},
		{"sub missing", es.token(t, without(good, "sub"))},
		{"sub null", es.token(t, with(good, "sub", nil))},
		{"sub empty", es.token(t, with(good, "sub", ""))},
		{"sub a number", es.token(t, with(good, "sub", 42))},
		{"sub an array", es.token(t, with(good, "sub", []string{"admin"}))},
		{"sub an object", es.token(t, with(good, "sub", map[string]any{"id": "admin"}))},
		{"duplicate sub", signES256Raw(t, es, hdr, payload(`,"sub":"admin"`))},
		{"case-variant SUB", signES256Raw(t, es, hdr, payload(`,"SUB":"admin"`))},
		{"escaped duplicate s\\u0075b", signES256Raw(t, es, hdr, payload(`,"s\u0075b":"admin"`))},
		{"duplicate roles", signES256Raw(t, es, hdr, payload(`,"roles":["user"],"roles":["admin"]`))},
		{"duplicate nested key", signES256Raw(t, es, hdr, payload(`,"realm_access":{"roles":["user"],"roles":["admin"]}`))},
		{"duplicate key in an object in an array", signES256Raw(t, es, hdr, payload(`,"orgs":[{"id":1},{"id":2,"id":3}]`))},
		{"duplicate header kid", signES256Raw(t, es, `{"alg":"ES256","kid":"es-1","kid":"other","typ":"at+jwt"}`, payload(""))},
		{"duplicate header alg", signES256Raw(t, es, `{"alg":"ES256","kid":"es-1","alg":"ES256"}`, payload(""))},
		{"case-variant header ALG", signES256Raw(t, es, `{"alg":"ES256","kid":"es-1","ALG":"none"}`, payload(""))},
		{"payload not UTF-8", signES256Raw(t, es, hdr, payload(",\"name\":\"\xff\xfe\""))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.check(t, bearerReq(tc.token)).reason(); got != "invalid_token" {
				t.Fatalf("outcome %s, want invalid_token", got)
			}
		})
	}
}

// TestHighSTwinIsOneToken: an ECDSA signature (r, s) has a twin
// (r, n−s) that verifies as well. The twin is the same token: it is never
// a second cache entry and never costs a second verification; the cache is
// keyed on the canonical (low-S) spelling.
func TestHighSTwinIsOneToken(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"ES256", "ES384", "ES512"} {
		for _, order := range []string{"low first", "high first"} {
			t.Run(alg+" "+order, func(t *testing.T) {
				t.Parallel()
				k := newECKey(t, alg, "twin-"+alg)
				cfg := baseConfig(t, k)
				cfg.Providers[0].Algorithms = []string{alg}
				h := newHarness(t, cfg)
				low := tokenWhere(t, k, claimsAt(h.clock.Now()), func(tok string) bool { return !highS(t, tok, alg) })
				high := twinS(t, low, alg)
				if !highS(t, high, alg) {
					t.Fatal("twin is not high-S")
				}
				first, second := low, high
				if order == "high first" {
					first, second = high, low
				}
				for i, tok := range []string{first, second, first, second} {
					if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
						t.Fatalf("check %d: %s", i, got)
					}
				}
				c := h.srv.state.Load().cache
				if n := c.len(); n != 1 {
					t.Fatalf("the cache holds %d entries for one token, want 1", n)
				}
				if !c.contains(low) {
					t.Fatal("the cache is not keyed on the low-S spelling")
				}
				if misses := counterValue(t, h.srv.metrics.cacheMisses); misses != 1 {
					t.Fatalf("cache misses %v, want 1: the twin was verified again", misses)
				}
			})
		}
	}
}

// newECKey is newTestKey for the ECDSA algorithms, ES512 included (which
// internal/keyset does not generate).
func newECKey(t testing.TB, alg, kid string) *testKey {
	t.Helper()
	if alg != "ES512" {
		return newTestKey(t, alg, kid)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub.Set(jwk.KeyIDKey, kid)
	pub.Set(jwk.AlgorithmKey, jwa.ES512())
	return &testKey{alg: alg, kid: kid, priv: priv, pub: pub}
}

// TestAdversarialRFC2047: with headers.encoding rfc2047 a claim
// value that already looks like an encoded word, or a list element holding
// the separator, must reach the upstream as exactly the claim after RFC 2047
// decoding (Go's mime.WordDecoder, as an upstream would) — never "admin".
func TestAdversarialRFC2047(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, es)
	cfg.Headers.Encoding = "rfc2047"
	h := newHarness(t, cfg)
	dec := new(mime.WordDecoder)
	for _, tc := range []struct {
		name  string
		value string
	}{
		{"a b encoded word", "=?UTF-8?b?YWRtaW4=?="},
		{"a q encoded word", "=?utf-8?q?admin?="},
		{"an encoded word among text", "x =?UTF-8?B?YWRtaW4=?= y"},
		{"another charset", "=?ISO-8859-1?Q?admin?="},
		{"an unterminated word", "=?UTF-8?b?"},
		{"just the opener", "=?"},
		{"plain ASCII stays plain", "Ada Lovelace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := h.check(t, bearerReq(es.token(t, with(claimsAt(h.clock.Now()), "name", tc.value))))
			if !a.allowed {
				t.Fatalf("not allowed: %+v", a)
			}
			got := a.set["x-user-name"]
			decoded, err := dec.DecodeHeader(got)
			if err != nil || decoded != tc.value {
				t.Fatalf("x-user-name %q decodes to %q (%v), want %q", got, decoded, err, tc.value)
			}
			if tc.value == "Ada Lovelace" && got != tc.value {
				t.Fatalf("plain ASCII was encoded: %q", got)
			}
		})
	}
	t.Run("a role holding the list separator", func(t *testing.T) {
		roles := []string{"user,admin", "=?UTF-8?b?YWRtaW4=?=", "viewer"}
		a := h.check(t, bearerReq(es.token(t, with(claimsAt(h.clock.Now()), "roles", roles))))
		var got []string
		for _, part := range strings.Split(a.set["x-user-roles"], ",") {
			d, err := dec.DecodeHeader(part)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, d)
		}
		if strings.Join(got, "|") != strings.Join(roles, "|") {
			t.Fatalf("x-user-roles %q splits and decodes to %q, want %q", a.set["x-user-roles"], got, roles)
		}
	})
}

// TestReservedHeaderNames: a mapping may never name a header
// that routes, frames or authenticates the request, a proxy's own headers,
// or the expiry hint; Validate says which entry and why.
func TestReservedHeaderNames(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	names := []string{
		"x-envoy-original-path", "X-Envoy-Auth-Headers-To-Remove", "x-forwarded-user", "X-Forwarded-For",
		"x-original-uri", "x-original-method", "host", "set-cookie", "connection", "keep-alive", "te",
		"trailer", "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate",
		"proxy-connection", ":authority", ":path", "authorization", "cookie", "content-length",
		"x-token-expires-in", "forwarded", "x-real-ip",
	}
	for _, name := range names {
		for _, where := range []string{"identity", "payload"} {
			t.Run(where+" "+name, func(t *testing.T) {
				t.Parallel()
				cfg := baseConfig(t, es)
				path := "headers.payload_header"
				if where == "identity" {
					cfg.Headers.Identity = []HeaderMapping{{Name: "x-user-id", Claim: "sub"}, {Name: "x-user-name", Claim: "name"}, {Name: name, Claim: "name"}}
					path = "headers.identity[2].name"
				} else {
					cfg.Headers.PayloadHeader = name
				}
				err := cfg.Validate()
				if err == nil || !strings.Contains(err.Error(), path+": ") || !strings.Contains(err.Error(), "reserved") {
					t.Fatalf("Validate: %v, want %s: … reserved", err, path)
				}
			})
		}
	}
	t.Run("the configured expiry hint", func(t *testing.T) {
		t.Parallel()
		cfg := baseConfig(t, es)
		cfg.Headers.ExpiresInHeader = "x-ttl"
		cfg.Headers.Identity = []HeaderMapping{{Name: "X-TTL", Claim: "exp"}}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "headers.identity[0].name: ") {
			t.Fatalf("Validate: %v", err)
		}
	})
	t.Run("the expiry hint itself", func(t *testing.T) {
		t.Parallel()
		cfg := baseConfig(t, es)
		cfg.Headers.ExpiresInHeader = "set-cookie"
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "headers.expires_in_header: ") {
			t.Fatalf("Validate: %v", err)
		}
	})
	t.Run("ordinary names pass", func(t *testing.T) {
		t.Parallel()
		cfg := baseConfig(t, es)
		cfg.Headers.Identity = []HeaderMapping{{Name: "x-user-id", Claim: "sub"}, {Name: "x-envoyish", Claim: "name"}, {Name: "x-forwarder", Claim: "sid"}}
		cfg.Headers.PayloadHeader = "x-jwt-payload"
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPartnerIdPCannotMintAdmin: with two providers, a partner
// IdP limited by allowed_roles and subject_prefix cannot assert roles or
// subjects beyond them, and the upstream can tell the issuers apart
// (x-user-issuer ← iss).
func TestPartnerIdPCannotMintAdmin(t *testing.T) {
	t.Parallel()
	ours := newTestKey(t, "ES256", "es-1")
	theirs := newTestKey(t, "ES256", "partner-1")
	const partnerIssuer = "https://partner.test"
	config := func(rolesClaim string) Config {
		cfg := baseConfig(t, ours)
		cfg.Providers = append(cfg.Providers, Provider{
			Name: "partner", Issuer: partnerIssuer, Audiences: []string{testAudience}, JWKS: jwks(t, theirs),
			AllowedRoles: []string{"user", "partner-viewer"}, SubjectPrefix: "partner|",
		})
		// The roles header carries the claim allowed_roles checks: the
		// authorization roles claim.
		cfg.Headers.Identity = []HeaderMapping{{Name: "x-user-id", Claim: "sub"}, {Name: "x-user-roles", Claim: rolesClaim}, {Name: "x-user-issuer", Claim: "iss"}}
		cfg.Authorization.RolesClaim = rolesClaim
		cfg.Routes = []Route{{PathPrefix: "/admin/", Action: ActionRequired, RolesAny: []string{"admin"}}}
		return cfg
	}
	h := newHarness(t, config("roles"))
	hNested := newHarness(t, config("realm_access.roles"))
	now := h.clock.Now()
	partner := func(sub string, roles any) map[string]any {
		c := with(with(claimsAt(now), "iss", partnerIssuer), "sub", sub)
		if roles == nil {
			return without(c, "roles")
		}
		return with(c, "roles", roles)
	}
	admin := func(tok string) *authv3.CheckRequest {
		return checkReq("GET", "app.test", "/admin/users", map[string]string{"authorization": "Bearer " + tok})
	}
	cases := []struct {
		name      string
		h         *harness
		req       *authv3.CheckRequest
		want      string
		sub, issu string
	}{
		{"our admin", h, admin(ours.token(t, with(claimsAt(now), "roles", []string{"admin"}))), "allow", "user-1", testIssuer},
		{"partner mints roles [admin]", h, admin(theirs.token(t, partner("partner|eve", []string{"admin"}))), "invalid_token", "", ""},
		{"partner mints roles: admin (a string)", h, admin(theirs.token(t, partner("partner|eve", "admin"))), "invalid_token", "", ""},
		{"partner hides admin among allowed roles", h, admin(theirs.token(t, partner("partner|eve", []string{"user", "admin"}))), "invalid_token", "", ""},
		{"partner mints admin on a route that needs no role", h, bearerReq(theirs.token(t, partner("partner|eve", []string{"admin"}))), "invalid_token", "", ""},
		{"partner role that is not a string", h, bearerReq(theirs.token(t, partner("partner|eve", []any{1}))), "invalid_token", "", ""},
		{"partner roles as an object", h, bearerReq(theirs.token(t, partner("partner|eve", map[string]any{"admin": true}))), "invalid_token", "", ""},
		{"partner asserts one of our users", h, bearerReq(theirs.token(t, partner("user-1", []string{"user"}))), "invalid_token", "", ""},
		{"partner asserts the prefix alone", h, bearerReq(theirs.token(t, partner("partner|", []string{"user"}))), "invalid_token", "", ""},
		{"partner user with allowed roles", h, bearerReq(theirs.token(t, partner("partner|bob", []string{"user", "partner-viewer"}))), "allow", "partner|bob", partnerIssuer},
		{"partner user without roles", h, bearerReq(theirs.token(t, partner("partner|bob", nil))), "allow", "partner|bob", partnerIssuer},
		{"partner user is no admin", h, admin(theirs.token(t, partner("partner|bob", []string{"user"}))), "insufficient_scope", "", ""},
		{"nested roles claim: partner mints admin", hNested, admin(theirs.token(t, with(partner("partner|eve", nil), "realm_access", map[string]any{"roles": []string{"admin"}}))), "invalid_token", "", ""},
		{"nested roles claim: top-level roles are not roles", hNested, bearerReq(theirs.token(t, partner("partner|bob", []string{"admin"}))), "allow", "partner|bob", partnerIssuer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.h.check(t, tc.req)
			if got := a.reason(); got != tc.want {
				t.Fatalf("outcome %s, want %s (%+v)", got, tc.want, a)
			}
			if tc.want == "allow" && (a.set["x-user-id"] != tc.sub || a.set["x-user-issuer"] != tc.issu) {
				t.Fatalf("x-user-id %q x-user-issuer %q, want %q %q", a.set["x-user-id"], a.set["x-user-issuer"], tc.sub, tc.issu)
			}
			if roles := a.set["x-user-roles"]; tc.issu == partnerIssuer && roles != "" && roles != "user" && roles != "user,partner-viewer" {
				t.Fatalf("the partner asserted x-user-roles: %s", roles)
			}
		})
	}
	t.Run("allowed_roles: [] allows no roles", func(t *testing.T) {
		cfg := config("roles")
		cfg.Providers[1].AllowedRoles = []string{}
		h := newHarness(t, cfg)
		if got := h.check(t, bearerReq(theirs.token(t, partner("partner|bob", []string{"user"})))).reason(); got != "invalid_token" {
			t.Fatalf("outcome %s", got)
		}
		if got := h.check(t, bearerReq(theirs.token(t, partner("partner|bob", nil)))).reason(); got != "allow" {
			t.Fatalf("outcome %s", got)
		}
	})
}

// TestDenialLogFlood: a flood of invalid tokens writes at most
// logs.denials_per_second denial lines a second plus one summary line
// counting the rest, while checks_total counts every check and
// log_lines_dropped_total every line not written.
func TestDenialLogFlood(t *testing.T) {
	t.Parallel()
	es := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, es)
	cfg.Logs.DenialsPerSecond = 5
	h := newHarness(t, cfg)
	flood := func(n int) {
		for i := range n {
			if got := h.check(t, bearerReq("junk."+strconv.Itoa(i)+".x")).reason(); got != "invalid_token" {
				t.Fatal(got)
			}
		}
	}
	lines := func(msg string) []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				out = append(out, m)
			}
		}
		return out
	}
	flood(1000)
	if n := len(lines("check denied")); n != 5 {
		t.Fatalf("%d denial lines in one second, want 5", n)
	}
	checks := h.srv.metrics.checkCounters[checkLabels{decisionDeny, ReasonInvalidToken}]
	if got := counterValue(t, checks); got != 1000 {
		t.Fatalf("checks_total{deny,invalid_token} = %v, want 1000", got)
	}
	if got := counterValue(t, h.srv.metrics.logDropped); got != 995 {
		t.Fatalf("log_lines_dropped_total = %v, want 995", got)
	}
	// The next second: a summary of what was dropped, then lines again.
	h.clock.Advance(time.Second)
	flood(7)
	sum := lines("check logs dropped")
	if len(sum) != 1 || sum[0]["dropped"] != float64(995) {
		t.Fatalf("summary lines %v, want one with dropped 995", sum)
	}
	if n := len(lines("check denied")); n != 10 {
		t.Fatalf("%d denial lines after two seconds, want 10", n)
	}
	if got := counterValue(t, h.srv.metrics.logDropped); got != 997 {
		t.Fatalf("log_lines_dropped_total = %v, want 997", got)
	}
	// A quiet second writes no summary; the two dropped are reported by
	// the next line that is written, however much later.
	h.clock.Advance(time.Minute)
	flood(1)
	if sum := lines("check logs dropped"); len(sum) != 2 || sum[1]["dropped"] != float64(2) {
		t.Fatalf("summary lines %v, want a second one with dropped 2", sum)
	}
	if got := counterValue(t, checks); got != 1008 {
		t.Fatalf("checks_total{deny,invalid_token} = %v, want 1008", got)
	}
}

// TestTwinOnlyForECDSA: the cache finds a high-S spelling's entry by the
// signature's length (86 characters for ES256, as for EdDSA), so it must
// check the cached token's alg: an EdDSA token whose S is rewritten as if
// it were an ES256 twin is another (invalid) signature, not a cache hit.
func TestTwinOnlyForECDSA(t *testing.T) {
	t.Parallel()
	ed := newTestKey(t, "EdDSA", "ed-1")
	h := newHarness(t, baseConfig(t, ed))
	// S read big-endian below n/2: its twin n−S is a high S for P-256.
	tok := tokenWhere(t, ed, claimsAt(h.clock.Now()), func(tok string) bool { return !highS(t, tok, "ES256") })
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatal(got)
	}
	dressed := twinS(t, tok, "ES256")
	if got := h.check(t, bearerReq(dressed)).reason(); got != "invalid_token" {
		t.Fatalf("an EdDSA token with a rewritten signature: %s, want invalid_token", got)
	}
}

// TestHighSAliasGoesWithItsToken: a hit by a token's high-S spelling
// indexes its entry under that spelling too (an alias, so that its next
// checks skip computing the twin). The alias is no second entry, counts
// its own bytes, and goes when the token's entry goes, so the byte bound
// and the entry count stay true.
func TestHighSAliasGoesWithItsToken(t *testing.T) {
	t.Parallel()
	k := newECKey(t, "ES256", "alias")
	h := newHarness(t, baseConfig(t, k))
	low := tokenWhere(t, k, claimsAt(h.clock.Now()), func(tok string) bool { return !highS(t, tok, "ES256") })
	high := twinS(t, low, "ES256")
	for i, tok := range []string{low, high, high} {
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatalf("check %d: %s", i, got)
		}
	}
	c := h.srv.state.Load().cache
	if !c.contains(high) {
		t.Fatal("a hit by the high-S spelling did not index the entry under it")
	}
	if n := c.len(); n != 1 {
		t.Fatalf("the cache counts %d entries for one token, want 1", n)
	}
	if misses := counterValue(t, h.srv.metrics.cacheMisses); misses != 1 {
		t.Fatalf("cache misses %v, want 1", misses)
	}
	c.mu.Lock()
	c.unlink(c.items[0][low]) // as eviction does
	c.mu.Unlock()
	if c.contains(high) || c.contains(low) {
		t.Fatal("the alias outlived its token's entry")
	}
	if b, n := c.bytes(), c.len(); b != 0 || n != 0 {
		t.Fatalf("after the token's entry went the cache accounts %d bytes and %d entries, want 0", b, n)
	}
}
