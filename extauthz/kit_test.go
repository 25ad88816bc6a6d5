package extauthz

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/proctest"
)

// testKey is a signing key generated for a test, with its public JWK.
type testKey struct {
	alg  string
	kid  string
	priv any
	pub  jwk.Key
}

var (
	keyCacheMu sync.Mutex
	keyCache   = map[string]*testKey{}
)

// newTestKey generates a key for alg (RSA keys are slow, so keys with the
// same name are shared within one test binary).
func newTestKey(t testing.TB, alg, name string) *testKey {
	t.Helper()
	keyCacheMu.Lock()
	defer keyCacheMu.Unlock()
	if k, ok := keyCache[alg+"/"+name]; ok {
		return k
	}
	a, err := keyset.ParseAlg(alg)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keyset.Generate(a)
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if err := jwk.Export(priv, &raw); err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub.Set(jwk.KeyIDKey, name)
	k := &testKey{alg: alg, kid: name, priv: raw, pub: pub}
	keyCache[alg+"/"+name] = k
	return k
}

// jwks returns a JWKS document holding the public halves of keys.
func jwks(t testing.TB, keys ...*testKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		c, err := k.pub.Clone()
		if err != nil {
			t.Fatal(err)
		}
		set.AddKey(c)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signRaw builds a compact JWS from any header and payload bytes, signing
// with key (which may be an HMAC secret []byte). Tests need tokens no
// well-behaved library would make.
func signRaw(t testing.TB, alg string, key any, header map[string]any, payload []byte) string {
	t.Helper()
	hb, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(hb) + "." + b64(payload)
	var sig []byte
	switch alg {
	case "none":
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "ES256", "ES384", "ES512":
		h, size := hashFor(alg)
		priv := key.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest(h, input))
		if err != nil {
			t.Fatal(err)
		}
		sig = append(pad(r, size), pad(s, size)...)
	case "RS256", "RS384", "RS512":
		h, _ := hashFor(alg)
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), h, digest(h, input))
	case "PS256", "PS384", "PS512":
		h, _ := hashFor(alg)
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), h, digest(h, input), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "EdDSA":
		sig = ed25519.Sign(key.(ed25519.PrivateKey), []byte(input))
	default:
		t.Fatalf("signRaw: unknown alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func hashFor(alg string) (crypto.Hash, int) {
	switch alg[2:] {
	case "384":
		return crypto.SHA384, 48
	case "512":
		return crypto.SHA512, 66
	}
	return crypto.SHA256, 32
}

func digest(h crypto.Hash, s string) []byte {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384([]byte(s))
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512([]byte(s))
		return d[:]
	}
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func pad(n *big.Int, size int) []byte {
	b := n.Bytes()
	return append(bytes.Repeat([]byte{0}, size-len(b)), b...)
}

const (
	testIssuer   = "https://issuer.test"
	testAudience = "api"
)

// claimsAt are valid claims for a token issued at now, living 15 minutes.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": "user-1", "name": "Ada",
		"roles": []string{"user"}, "sid": "sess-1", "jti": "jti-1", "scope": "read write",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
	}
}

// token signs claims with k (header alg and kid from the key, typ at+jwt).
func (k *testKey) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return k.tokenWithHeader(t, map[string]any{"alg": k.alg, "kid": k.kid, "typ": "at+jwt"}, claims)
}

func (k *testKey) tokenWithHeader(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	alg, _ := header["alg"].(string)
	if alg == "" || alg == "none" {
		return signRaw(t, "none", nil, header, p)
	}
	return signRaw(t, alg, k.priv, header, p)
}

// baseConfig trusts keys inline for testIssuer/testAudience.
func baseConfig(t testing.TB, keys ...*testKey) Config {
	return Config{Providers: []Provider{{Issuer: testIssuer, Audiences: []string{testAudience}, JWKS: jwks(t, keys...)}}}
}

type harness struct {
	srv   *Server
	clock *fakeclock.Clock
	reg   *prometheus.Registry
	logs  *proctest.SyncBuffer
}

// newHarness starts a Server on cfg with a fake clock, its own registry and
// debug logs captured.
func newHarness(t testing.TB, cfg Config, mod ...func(*Options)) *harness {
	t.Helper()
	h := &harness{clock: fakeclock.New(), reg: prometheus.NewRegistry(), logs: &proctest.SyncBuffer{}}
	opts := Options{
		Logger:       slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:     h.reg,
		Clock:        h.clock.Now,
		FetchBackoff: time.Millisecond,
	}
	for _, m := range mod {
		m(&opts)
	}
	srv, err := NewServer(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h.srv = srv
	return h
}

// checkReq is a real CheckRequest as Envoy sends it (lower-case header names).
func checkReq(method, host, path string, headers map[string]string) *authv3.CheckRequest {
	if headers == nil {
		headers = map[string]string{}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Host: host, Path: path, Headers: headers, Scheme: "https", Protocol: "HTTP/1.1"},
	}}}
}

func bearerReq(token string) *authv3.CheckRequest {
	return checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + token})
}

// answer is a CheckResponse flattened for assertions.
type answer struct {
	allowed  bool
	status   int
	set      map[string]string
	actions  map[string]corev3.HeaderValueOption_HeaderAppendAction
	removed  []string
	response map[string]string
	body     map[string]string
}

func (h *harness) check(t testing.TB, req *authv3.CheckRequest) answer {
	t.Helper()
	resp, err := h.srv.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return flatten(t, resp)
}

func flatten(t testing.TB, resp *authv3.CheckResponse) answer {
	t.Helper()
	a := answer{set: map[string]string{}, actions: map[string]corev3.HeaderValueOption_HeaderAppendAction{}, response: map[string]string{}}
	if ok := resp.GetOkResponse(); ok != nil {
		if resp.GetStatus().GetCode() != 0 {
			t.Fatalf("ok response with status %v", resp.GetStatus())
		}
		a.allowed = true
		for _, h := range ok.GetHeaders() {
			a.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			a.actions[h.GetHeader().GetKey()] = h.GetAppendAction()
		}
		a.removed = ok.GetHeadersToRemove()
		for _, h := range ok.GetResponseHeadersToAdd() {
			a.response[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return a
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("response is neither ok nor denied: %v", resp)
	}
	a.status = int(d.GetStatus().GetCode())
	for _, h := range d.GetHeaders() {
		a.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &a.body); err != nil {
		t.Fatalf("denial body %q: %v", d.GetBody(), err)
	}
	return a
}

// reason is the outcome in one word: "allow" or the denial's error.
func (a answer) reason() string {
	if a.allowed {
		return "allow"
	}
	return a.body["error"]
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func b64decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
