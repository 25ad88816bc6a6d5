package extauthz

import (
	"mime"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
)

// Allow: identity headers from claims, spoofed copies removed, the expiry hint.
func TestCheckAllow(t *testing.T) {
	t.Parallel()
	runCheckCases(t, []checkCase{
		{name: "default identity headers overwrite client copies", want: "allow",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return withHeaders(k.es.token(t, k.claims(func(c map[string]any) { c["roles"] = []string{"user", "admin"} })),
					map[string]string{"x-user-id": "spoofed", "x-session-id": "spoofed"})
			},
			verify: func(t *testing.T, a answer) {
				want := map[string]string{"x-user-id": "user-1", "x-user-name": "Ada", "x-user-roles": "user,admin", "x-session-id": "sess-1"}
				if diff := cmp.Diff(want, a.set); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
				for name, act := range a.actions {
					if act != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
						t.Errorf("%s: append action %v", name, act)
					}
				}
				if len(a.removed) != 0 {
					t.Errorf("headers_to_remove %v, want none", a.removed)
				}
			}},
		{name: "absent claims are removed, not set", want: "allow",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { delete(c, "name"); delete(c, "sid") })))
			},
			verify: func(t *testing.T, a answer) {
				if diff := cmp.Diff([]string{"x-user-name", "x-session-id"}, a.removed); diff != "" {
					t.Errorf("removed (-want +got):\n%s", diff)
				}
			}},
		{name: "dotted paths, numbers, bools, arrays", want: "allow",
			cfg: func(c *Config) {
				c.Headers.Identity = []HeaderMapping{
					{Name: "x-tenant", Claim: "org.tenant.id"}, {Name: "x-level", Claim: "level"},
					{Name: "x-admin", Claim: "admin"}, {Name: "x-groups", Claim: "groups"}, {Name: "x-object", Claim: "org"},
				}
			},
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) {
					c["org"] = map[string]any{"tenant": map[string]any{"id": "t-9"}}
					c["level"] = 12345678901
					c["admin"] = false
					c["groups"] = []any{"a", 7, true, map[string]any{"x": 1}}
				})))
			},
			verify: func(t *testing.T, a answer) {
				want := map[string]string{"x-tenant": "t-9", "x-level": "12345678901", "x-admin": "false", "x-groups": "a,7,true"}
				if diff := cmp.Diff(want, a.set); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"x-object"}, a.removed); diff != "" {
					t.Errorf("an object claim must be removed, not set (-want +got):\n%s", diff)
				}
			}},
		{name: "non-ASCII percent-encoded losslessly", want: "allow",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) {
					c["name"] = "王小明 100%"
					c["roles"] = []string{"a,b", "ü"}
				})))
			},
			verify: func(t *testing.T, a answer) {
				if got := a.set["x-user-name"]; got != "%E7%8E%8B%E5%B0%8F%E6%98%8E 100%25" {
					t.Errorf("x-user-name %q", got)
				}
				if dec, _ := url.PathUnescape(a.set["x-user-name"]); dec != "王小明 100%" {
					t.Errorf("decodes to %q", dec)
				}
				var roles []string
				for _, r := range strings.Split(a.set["x-user-roles"], ",") {
					d, _ := url.PathUnescape(r)
					roles = append(roles, d)
				}
				if diff := cmp.Diff([]string{"a,b", "ü"}, roles); diff != "" {
					t.Errorf("roles round trip (-want +got):\n%s", diff)
				}
			}},
		{name: "non-ASCII as RFC 2047 when configured", want: "allow",
			cfg: func(c *Config) { c.Headers.Encoding = "rfc2047" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["name"] = "王小明\r\nx-admin: true" })))
			},
			verify: func(t *testing.T, a answer) {
				got := a.set["x-user-name"]
				if !strings.HasPrefix(got, "=?UTF-8?b?") || strings.ContainsAny(got, "\r\n") {
					t.Fatalf("x-user-name %q", got)
				}
				dec, err := new(mime.WordDecoder).Decode(got)
				if err != nil || dec != "王小明\r\nx-admin: true" {
					t.Errorf("decodes to %q, %v", dec, err)
				}
			}},
		{name: "whole payload header", want: "allow",
			cfg: func(c *Config) { c.Headers.PayloadHeader = "x-jwt-payload" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return withHeaders(k.es.token(t, k.claims(nil)), map[string]string{"x-jwt-payload": "spoofed"})
			},
			verify: func(t *testing.T, a answer) {
				p := a.set["x-jwt-payload"]
				claims, err := decodeClaimsB64(p)
				if err != nil || claims["sub"] != "user-1" {
					t.Errorf("payload header %q: %v %v", p, claims, err)
				}
			}},
		{name: "payload header removed on anonymous allow", want: "allow",
			cfg: func(c *Config) { c.Headers.PayloadHeader = "x-jwt-payload"; c.DefaultAction = ActionPublic },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "a", "/", map[string]string{"x-jwt-payload": "spoofed"})
			},
			verify: func(t *testing.T, a answer) {
				if !contains(a.removed, "x-jwt-payload") {
					t.Errorf("removed %v", a.removed)
				}
			}},
		{name: "token header removed when configured", want: "allow",
			cfg: func(c *Config) { c.Token.RemoveAuthorizationHeader = true },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.es.token(t, k.claims(nil))) },
			verify: func(t *testing.T, a answer) {
				if !contains(a.removed, "authorization") {
					t.Errorf("removed %v", a.removed)
				}
			}},
		{name: "token header kept by default", want: "allow",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.es.token(t, k.claims(nil))) },
			verify: func(t *testing.T, a answer) {
				if contains(a.removed, "authorization") {
					t.Errorf("removed %v", a.removed)
				}
			}},
		{name: "x-token-expires-in in response_headers_to_add", want: "allow",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["exp"] = k.now.Add(300 * time.Second).Unix() })))
			},
			verify: func(t *testing.T, a answer) {
				if diff := cmp.Diff(map[string]string{"x-token-expires-in": "300"}, a.response); diff != "" {
					t.Errorf("response headers (-want +got):\n%s", diff)
				}
			}},
		{name: "expires-in exposed to an allowed origin", want: "allow",
			cfg: func(c *Config) { c.CORS.AllowedOrigins = []string{"https://app.test"} },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return withHeaders(k.es.token(t, k.claims(nil)), map[string]string{"origin": "https://app.test"})
			},
			verify: func(t *testing.T, a answer) {
				if a.response["access-control-expose-headers"] != "x-token-expires-in" {
					t.Errorf("response headers %v", a.response)
				}
			}},
	})
}

func decodeClaimsB64(s string) (map[string]any, error) {
	b, err := b64decode(s)
	if err != nil {
		return nil, err
	}
	return decodeClaims(b)
}

// The anti-spoofing invariant, over every kind of answer: each mapped
// header is either set (overwriting) or removed, and never both — Envoy
// applies headers, then headers_to_remove, so a name in both would vanish.
func TestAntiSpoofingInvariant(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Headers.Identity = append(DefaultIdentityHeaders(), HeaderMapping{Name: "x-email", Claim: "email"})
	cfg.Headers.PayloadHeader = "x-jwt-payload"
	cfg.Token.RemoveAuthorizationHeader = true
	cfg.Routes = []Route{
		{PathPrefix: "/public/", Action: ActionPublic},
		{PathPrefix: "/optional/", Action: ActionOptional},
	}
	h := newHarness(t, cfg)
	now := h.clock.Now()
	good := k.token(t, claimsAt(now))
	partial := k.token(t, func() map[string]any { c := claimsAt(now); delete(c, "name"); c["email"] = "a@b"; return c }())
	forged := newTestKey(t, "ES256", "attacker").tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "es-1"}, claimsAt(now))
	mapped := []string{"x-user-id", "x-user-name", "x-user-roles", "x-session-id", "x-email", "x-jwt-payload"}
	spoof := map[string]string{}
	for _, n := range mapped {
		spoof[n] = "spoofed"
	}
	for _, path := range []string{"/public/a", "/optional/a", "/required"} {
		for name, tok := range map[string]string{"none": "", "good": good, "partial": partial, "forged": forged} {
			t.Run(path+"/"+name, func(t *testing.T) {
				headers := map[string]string{}
				for k, v := range spoof {
					headers[k] = v
				}
				if tok != "" {
					headers["authorization"] = "Bearer " + tok
				}
				resp, err := h.srv.Check(t.Context(), checkReq("GET", "app.test", path, headers))
				if err != nil {
					t.Fatal(err)
				}
				ok := resp.GetOkResponse()
				if ok == nil {
					return // a denial sends nothing upstream
				}
				set := map[string]bool{}
				for _, hv := range ok.GetHeaders() {
					set[hv.GetHeader().GetKey()] = true
					if hv.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
						t.Errorf("%s set with %v", hv.GetHeader().GetKey(), hv.GetAppendAction())
					}
					if hv.GetHeader().GetValue() == "spoofed" {
						t.Errorf("%s carries the client's value", hv.GetHeader().GetKey())
					}
				}
				removed := map[string]bool{}
				for _, r := range ok.GetHeadersToRemove() {
					if set[r] {
						t.Errorf("%s is both set and removed", r)
					}
					removed[r] = true
				}
				for _, n := range mapped {
					if !set[n] && !removed[n] {
						t.Errorf("%s is neither set nor removed: the client's copy would reach upstream", n)
					}
				}
			})
		}
	}
}

// Deny: status, WWW-Authenticate challenge and JSON body for each reason.
func TestCheckDeny(t *testing.T) {
	t.Parallel()
	cors := func(c *Config) { c.CORS.AllowedOrigins = []string{"https://app.test"} }
	runCheckCases(t, []checkCase{
		{name: "missing token: 401 without error attribute", want: "missing_token",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return checkReq("GET", "a", "/", nil) },
			verify: func(t *testing.T, a answer) {
				want := map[string]string{
					"www-authenticate": `Bearer realm="tokengate"`,
					"content-type":     "application/json",
					"cache-control":    "no-store",
				}
				if diff := cmp.Diff(want, a.set); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
				if a.status != 401 {
					t.Errorf("status %d", a.status)
				}
				if diff := cmp.Diff(map[string]string{"error": "missing_token", "error_description": "a bearer token is required"}, a.body); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}},
		{name: "expired: 401 invalid_token attribute, token_expired body", want: "token_expired",
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["exp"] = k.now.Add(-time.Hour).Unix() })))
			},
			verify: func(t *testing.T, a answer) {
				if want := `Bearer realm="tokengate", error="invalid_token", error_description="the token has expired", reason="token_expired"`; a.set["www-authenticate"] != want {
					t.Errorf("www-authenticate %s", a.set["www-authenticate"])
				}
				if a.status != 401 {
					t.Errorf("status %d", a.status)
				}
			}},
		{name: "custom realm", want: "missing_token",
			cfg: func(c *Config) { c.Realm = "shop" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return checkReq("GET", "a", "/", nil) },
			verify: func(t *testing.T, a answer) {
				if a.set["www-authenticate"] != `Bearer realm="shop"` {
					t.Errorf("www-authenticate %s", a.set["www-authenticate"])
				}
			}},
		{name: "CORS on denials for an allowed origin", want: "missing_token", cfg: cors,
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "a", "/", map[string]string{"origin": "https://app.test"})
			},
			verify: func(t *testing.T, a answer) {
				want := map[string]string{
					"access-control-allow-origin":      "https://app.test",
					"access-control-allow-credentials": "true",
					"access-control-expose-headers":    "www-authenticate, x-token-expires-in",
					"vary":                             "Origin",
				}
				for k, v := range want {
					if a.set[k] != v {
						t.Errorf("%s = %q, want %q", k, a.set[k], v)
					}
				}
			}},
		{name: "no CORS headers for another origin", want: "missing_token", cfg: cors,
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "a", "/", map[string]string{"origin": "https://evil.test"})
			},
			verify: func(t *testing.T, a answer) {
				var names []string
				for k := range a.set {
					names = append(names, k)
				}
				sort.Strings(names)
				if diff := cmp.Diff([]string{"cache-control", "content-type", "www-authenticate"}, names); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
			}},
		{name: "credentials can be switched off", want: "missing_token",
			cfg: func(c *Config) { cors(c); f := false; c.CORS.AllowCredentials = &f },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "a", "/", map[string]string{"origin": "https://app.test"})
			},
			verify: func(t *testing.T, a answer) {
				if _, ok := a.set["access-control-allow-credentials"]; ok {
					t.Error("allow-credentials sent")
				}
			}},
	})
}

// Revocation (the Denylist hook): checked on misses and on cache hits.
func TestCheckDenylist(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	dl := &fakeDenylist{revoked: map[string]bool{}, ready: true}
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.Denylist = dl })
	tok := k.token(t, claimsAt(h.clock.Now()))
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatalf("before revocation: %s", got)
	}
	dl.revoke("sess-1")
	a := h.check(t, bearerReq(tok))
	if a.reason() != "token_revoked" || a.status != 401 {
		t.Fatalf("after revocation: %s %d", a.reason(), a.status)
	}
	if hits := counterValue(t, h.srv.metrics.cacheHits); hits != 1 {
		t.Fatalf("the revoked check was not a cache hit (hits %v)", hits)
	}
	dl.setReady(false)
	if h.srv.Ready() {
		t.Fatal("Ready() with the denylist not ready")
	}
}

type fakeDenylist struct {
	mu      sync.Mutex
	revoked map[string]bool
	ready   bool
}

func (d *fakeDenylist) Revoked(sid string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.revoked[sid]
}

func (d *fakeDenylist) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ready
}

func (d *fakeDenylist) revoke(sid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.revoked[sid] = true
}

func (d *fakeDenylist) setReady(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ready = v
}
