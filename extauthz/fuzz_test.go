package extauthz

import (
	"log/slog"
	"net/url"
	"strings"
	"testing"
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
