package extauthz

import (
	"encoding/base64"
	"log/slog"
	"mime"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/jsonscan"
)

// FuzzFindToken: token extraction never panics, never returns more than
// max_token_bytes, and finds exactly the credentials of a Bearer header.
func FuzzFindToken(f *testing.F) {
	f.Add("Bearer abc.def.ghi", "", "/")
	f.Add("bearer\tx", "at=y", "/?access_token=z")
	f.Add("Basic dXNlcg==", "a=1; at=\"q\"", "/p?access_token=%zz")
	f.Add("Bearer", "at=", "?#")
	f.Add("  BEARER   t  ", ",,;;at=1,at=2", "/?access_token=a&access_token=b")
	finder := tokenFinder{cookie: "at", queryParam: "access_token", maxBytes: 64}
	f.Fuzz(func(t *testing.T, authz, cookie, path string) {
		r := &request{method: "GET", path: path, headers: map[string]string{"authorization": authz, "cookie": cookie}}
		tok, src, d := finder.find(r)
		if d != nil {
			if d.reason != ReasonInvalidToken || tok != "" {
				t.Fatalf("refusal %v with token %q", d, tok)
			}
			return
		}
		if len(tok) > finder.maxBytes {
			t.Fatalf("token of %d bytes returned", len(tok))
		}
		if (tok == "") != (src == fromNowhere) {
			t.Fatalf("token %q from source %d", tok, src)
		}
		if want, ok := bearer(authz); ok && want != "" && len(want) <= finder.maxBytes && tok != want {
			t.Fatalf("Bearer header %q gave %q", authz, tok)
		}
	})
}

// FuzzIdentityHeaders: whatever the claims, every header value is safe
// (printable ASCII, no CR/LF), each mapped name is set or removed and never
// both, and a string claim percent-decodes back to itself.
func FuzzIdentityHeaders(f *testing.F) {
	f.Add([]byte(`{"sub":"u","name":"王小明","roles":["a","b,c"],"sid":"s"}`))
	f.Add([]byte(`{"sub":"x\r\nx-admin: true","org":{"id":7},"roles":"r1 r2"}`))
	f.Add([]byte(`{"sub":1e400,"name":null,"roles":[{"x":1},true,2.5]}`))
	f.Add([]byte(`{"sub":"%41%","name":"\u0000\u007f\u0085"}`))
	f.Add([]byte(`{"sub":"=?UTF-8?b?YWRtaW4=?=","roles":["user,admin","=?utf-8?q?admin?="]}`))
	m := newIdentityMapper(HeaderConfig{
		Identity:      append(DefaultIdentityHeaders(), HeaderMapping{Name: "x-org", Claim: "org.id"}),
		Encoding:      "percent",
		PayloadHeader: "x-jwt-payload",
	})
	m2047 := newIdentityMapper(HeaderConfig{Identity: DefaultIdentityHeaders(), Encoding: "rfc2047"})
	f.Fuzz(func(t *testing.T, payload []byte) {
		claims, err := decodeClaims(payload)
		if err != nil {
			return
		}
		for _, mapper := range []*identityMapper{m, m2047} {
			set, unset := mapper.headers(claims, payload)
			seen := map[string]bool{}
			for _, h := range set {
				if !safeHeaderValue(h.value) {
					t.Fatalf("unsafe value for %s: %q", h.name, h.value)
				}
				seen[h.name] = true
			}
			for _, n := range unset {
				if seen[n] {
					t.Fatalf("%s both set and removed", n)
				}
				seen[n] = true
			}
			if len(seen) != len(mapper.names) {
				t.Fatalf("covered %v, mapped %v", seen, mapper.names)
			}
		}
		if sub, ok := claims["sub"].(string); ok && sub != "" {
			set, _ := m.headers(claims, payload)
			for _, h := range set {
				if h.name == "x-user-id" {
					if dec, err := url.PathUnescape(h.value); err != nil || dec != sub {
						t.Fatalf("sub %q → %q → %q (%v)", sub, h.value, dec, err)
					}
				}
			}
			// rfc2047: what an upstream decodes is the claim, never
			// something a claim spelled as an encoded word.
			set, _ = m2047.headers(claims, payload)
			for _, h := range set {
				if h.name == "x-user-id" {
					if dec, err := new(mime.WordDecoder).DecodeHeader(h.value); err != nil || dec != sub {
						t.Fatalf("rfc2047: sub %q → %q → %q (%v)", sub, h.value, dec, err)
					}
				}
			}
		}
	})
}

// FuzzCheck: Check on arbitrary method, path, header and token never
// panics or errors, answers only with known reasons, and keeps the
// anti-spoofing invariant.
func FuzzCheck(f *testing.F) {
	k := newTestKey(f, "ES256", "es-1")
	cfg := baseConfig(f, k)
	cfg.Token.Cookie = "at"
	cfg.Token.QueryParam = "access_token"
	cfg.Routes = []Route{{PathPrefix: "/public/", Action: ActionPublic}, {PathPrefix: "/opt/", Action: ActionOptional}}
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	h := newHarness(f, cfg, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
	good := k.token(f, claimsAt(h.clock.Now()))
	f.Add("GET", "/api", "authorization", "Bearer "+good)
	f.Add("OPTIONS", "/public/x", "origin", "https://app.test")
	f.Add("POST", "/opt/../api", "cookie", "at="+good)
	f.Add("GET", "/?access_token="+good, "x-user-id", "admin")
	f.Add("GET", "/api", "authorization", "Bearer "+good[:len(good)-4]+"AAAA")
	f.Add("GET", "/public/%2e%2e/x", "authorization", "Bearer e30.e30.")
	known := map[string]bool{"allow": true, "missing_token": true, "invalid_token": true, "token_expired": true, "insufficient_scope": true}
	f.Fuzz(func(t *testing.T, method, path, name, value string) {
		headers := map[string]string{strings.ToLower(name): value, "x-user-id": "spoofed"}
		resp, err := h.srv.Check(t.Context(), checkReq(method, "app.test", path, headers))
		if err != nil {
			t.Fatalf("Check error: %v", err)
		}
		a := flatten(t, resp)
		if !known[a.reason()] {
			t.Fatalf("unknown outcome %q", a.reason())
		}
		if !a.allowed {
			return
		}
		for n, v := range a.set {
			if !safeHeaderValue(v) {
				t.Fatalf("unsafe %s: %q", n, v)
			}
		}
		if a.set["x-user-id"] == "" && !contains(a.removed, "x-user-id") {
			t.Fatal("spoofed x-user-id would pass")
		}
		if a.set["x-user-id"] != "" && a.set["x-user-id"] != "user-1" {
			t.Fatalf("x-user-id %q", a.set["x-user-id"])
		}
	})
}

// FuzzCompactToken: the canonical parser never panics, and what it
// accepts has one spelling — each segment is unpadded base64url that
// re-encodes to itself, the header is one JSON object with unique keys,
// the canonical form is a fixed point, and a token's high-S twin is found
// by twinKey (the cache's allocation-free lookup) under exactly that form.
func FuzzCompactToken(f *testing.F) {
	k := newTestKey(f, "ES256", "fuzz-es")
	ed := newTestKey(f, "EdDSA", "fuzz-ed")
	good := k.token(f, claimsAt(time.Unix(1_700_000_000, 0)))
	hs, ps, ss := segments(f, good)
	f.Add(good)
	f.Add(twinS(f, good, "ES256"))
	f.Add(ed.token(f, claimsAt(time.Unix(1_700_000_000, 0))))
	f.Add(hs + "." + ps + "." + strings.NewReplacer("-", "+", "_", "/").Replace(ss))
	f.Add(good + "==")
	f.Add(hs + "." + ps + "." + setTrailingBit(f, ss))
	f.Add(hs + "." + ps + "." + ss[:20] + "\n" + ss[20:])
	f.Add(b64([]byte(`{"alg":"ES256","alg":"none"}`)) + "." + ps + "." + ss)
	f.Add(b64([]byte(`{"alg":"ES256","crit":[]}`)) + "." + ps + "." + ss)
	f.Add(b64([]byte(`{"alg":"ES512"}`)) + "." + ps + "." + b64(make([]byte, 132)))
	f.Add("e30.e30.e30")
	f.Add("..")
	f.Add("a.b.c.d")
	f.Fuzz(func(t *testing.T, token string) {
		twin, curve := twinKey(nil, token)
		ct, d := splitToken(token)
		if d != nil {
			if d.reason != ReasonInvalidToken {
				t.Fatalf("refused with %s", d.reason)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %d segments", len(parts))
		}
		var decoded [3][]byte
		for i, seg := range parts {
			b, err := base64.RawURLEncoding.DecodeString(seg)
			if err != nil || base64.RawURLEncoding.EncodeToString(b) != seg {
				t.Fatalf("segment %d %q is not canonical base64url", i, seg)
			}
			decoded[i] = b
		}
		if err := jsonscan.CheckObject(decoded[0]); err != nil {
			t.Fatalf("header accepted: %v", err)
		}
		if string(ct.payload) != string(decoded[1]) {
			t.Fatal("payload differs from its segment")
		}
		again, d := splitToken(ct.canonical)
		if d != nil || again.canonical != ct.canonical {
			t.Fatalf("the canonical form %q is not a fixed point (%v)", ct.canonical, d)
		}
		if ct.canonical != token {
			if ecdsaCurveOf(ct.header.Alg) == nil {
				t.Fatalf("a %q token was respelled", ct.header.Alg)
			}
			if string(twin) != ct.canonical || curve == nil || curve.alg != ct.header.Alg {
				t.Fatalf("twinKey gave %q (%v), the parser %q", twin, curve, ct.canonical)
			}
		} else if twin != nil && curve.alg == ct.header.Alg {
			t.Fatalf("twinKey respelled a canonical %s token", curve.alg)
		}
		if jsonscan.CheckObject(ct.payload) == nil {
			if _, err := decodeClaims(ct.payload); err != nil {
				t.Fatalf("a payload with unique keys does not decode: %v", err)
			}
		}
	})
}
