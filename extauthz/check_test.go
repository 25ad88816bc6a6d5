package extauthz

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
)

// checkCase is one row: a config change, a request built from the test's
// keys and clock, and the expected outcome.
type checkCase struct {
	name   string
	cfg    func(*Config)
	req    func(t *testing.T, k *kit) *authv3.CheckRequest
	want   string // "allow" or the denial's error
	verify func(t *testing.T, a answer)
}

// kit is what a request builder can use.
type kit struct {
	es, rs, other *testKey
	now           time.Time
}

func (k *kit) claims(mod func(map[string]any)) map[string]any {
	c := claimsAt(k.now)
	if mod != nil {
		mod(c)
	}
	return c
}

func runCheckCases(t *testing.T, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := &kit{es: newTestKey(t, "ES256", "es-1"), rs: newTestKey(t, "RS256", "rs-1"), other: newTestKey(t, "ES256", "attacker")}
			cfg := baseConfig(t, k.es, k.rs)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			h := newHarness(t, cfg)
			k.now = h.clock.Now()
			a := h.check(t, tc.req(t, k))
			if got := a.reason(); got != tc.want {
				t.Fatalf("outcome %q, want %q (answer %+v)", got, tc.want, a)
			}
			if tc.verify != nil {
				tc.verify(t, a)
			}
		})
	}
}

func withHeaders(token string, extra map[string]string) *authv3.CheckRequest {
	h := map[string]string{"authorization": "Bearer " + token}
	for k, v := range extra {
		h[k] = v
	}
	return checkReq("GET", "app.test", "/api/things", h)
}

// Finding the token: where it may come from, and what is not a token.
func TestCheckTokenFinding(t *testing.T) {
	t.Parallel()
	runCheckCases(t, []checkCase{
		{name: "bearer header", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(nil)))
		}},
		{name: "scheme is case-insensitive", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/", map[string]string{"authorization": "bEaReR   " + k.es.token(t, k.claims(nil))})
		}},
		{name: "basic scheme is no token", want: "missing_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/", map[string]string{"authorization": "Basic dXNlcjpwYXNz"})
		}},
		{name: "empty bearer", want: "invalid_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/", map[string]string{"authorization": "Bearer "})
		}},
		{name: "cookie when configured", want: "allow",
			cfg: func(c *Config) { c.Token.Cookie = "at" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "app.test", "/", map[string]string{"cookie": "theme=dark; at=" + k.es.token(t, k.claims(nil)) + "; x=1"})
			}},
		{name: "cookie ignored when not configured", want: "missing_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/", map[string]string{"cookie": "at=" + k.es.token(t, k.claims(nil))})
		}},
		{name: "query parameter when switched on", want: "allow",
			cfg: func(c *Config) { c.Token.QueryParam = "access_token" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("GET", "app.test", "/events?x=1&access_token="+k.es.token(t, k.claims(nil)), nil)
			}},
		{name: "query parameter off by default", want: "missing_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/events?access_token="+k.es.token(t, k.claims(nil)), nil)
		}},
		{name: "over max_token_bytes refused before parsing", want: "invalid_token",
			cfg: func(c *Config) { c.MaxTokenBytes = 100 },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(nil)))
			},
			verify: func(t *testing.T, a answer) {
				if !strings.Contains(a.body["error_description"], "longer than 100 bytes") {
					t.Errorf("description %q", a.body["error_description"])
				}
			}},
		{name: "header_map (encode_raw_headers) is read", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			r := checkReq("GET", "app.test", "/", nil)
			r.Attributes.Request.Http.Headers = nil
			r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: "authorization", RawValue: []byte("Bearer " + k.es.token(t, k.claims(nil)))},
			}}
			return r
		}},
	})
}

// Verification: signature, algorithm, issuer, audience and times.
func TestCheckVerification(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("s", 40)
	runCheckCases(t, []checkCase{
		{name: "ES256", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.es.token(t, k.claims(nil))) }},
		{name: "RS256", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.rs.token(t, k.claims(nil))) }},
		{name: "algorithm outside allowlist", want: "invalid_token",
			cfg: func(c *Config) { c.Providers[0].Algorithms = []string{"ES256"} },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.rs.token(t, k.claims(nil))) }},
		{name: "HS256 with configured secret", want: "allow",
			cfg: func(c *Config) { c.Providers[0].HMACSecret = secret },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				p := []byte(mustJSON(t, k.claims(nil)))
				return bearerReq(signRaw(t, "HS256", []byte(secret), map[string]any{"alg": "HS256"}, p))
			}},
		{name: "HS256 without configured secret", want: "invalid_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			p := []byte(mustJSON(t, k.claims(nil)))
			return bearerReq(signRaw(t, "HS256", []byte(secret), map[string]any{"alg": "HS256"}, p))
		}},
		{name: "key alg binds: RS256 key used for PS256", want: "invalid_token",
			cfg: func(c *Config) {
				if !strings.Contains(string(c.Providers[0].JWKS), `"alg":"RS256"`) {
					panic("test JWKS lost the RSA key's alg")
				}
			},
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.rs.tokenWithHeader(t, map[string]any{"alg": "PS256", "kid": k.rs.kid}, k.claims(nil)))
			}},
		{name: "key without alg serves its family: RSA key for PS256", want: "allow",
			cfg: func(c *Config) {
				c.Providers[0].JWKS = []byte(strings.ReplaceAll(string(c.Providers[0].JWKS), `"alg":"RS256",`, ""))
			},
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.rs.tokenWithHeader(t, map[string]any{"alg": "PS256", "kid": k.rs.kid}, k.claims(nil)))
			}},
		{name: "aud array containing ours", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["aud"] = []string{"other", testAudience} })))
		}},
		{name: "expired is token_expired", want: "token_expired", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["exp"] = k.now.Add(-31 * time.Second).Unix() })))
		}},
		{name: "expired within leeway passes", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["exp"] = k.now.Add(-29 * time.Second).Unix() })))
		}},
		{name: "expired with a bad signature is invalid, not expired", want: "invalid_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.other.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": k.es.kid}, k.claims(func(c map[string]any) { c["exp"] = k.now.Add(-time.Hour).Unix() })))
		}},
		{name: "nbf within leeway passes", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["nbf"] = k.now.Add(20 * time.Second).Unix() })))
		}},
		{name: "iat in the future", want: "invalid_token", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["iat"] = k.now.Add(time.Hour).Unix() })))
		}},
		{name: "configured leeway 0", want: "token_expired",
			cfg: func(c *Config) { c.Providers[0].Leeway = &Duration{} },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["exp"] = k.now.Unix() })))
			}},
		{name: "max_lifetime exceeded", want: "invalid_token",
			cfg: func(c *Config) { c.Providers[0].MaxLifetime = Duration{10 * time.Minute} },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.es.token(t, k.claims(nil))) }},
		{name: "max_lifetime respected", want: "allow",
			cfg: func(c *Config) { c.Providers[0].MaxLifetime = Duration{time.Hour} },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest { return bearerReq(k.es.token(t, k.claims(nil))) }},
		{name: "typ at+jwt required and missing", want: "invalid_token",
			cfg: func(c *Config) { c.Providers[0].RequireTypATJWT = true },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": k.es.kid, "typ": "JWT"}, k.claims(nil)))
			}},
		{name: "typ application/at+jwt accepted", want: "allow",
			cfg: func(c *Config) { c.Providers[0].RequireTypATJWT = true },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.es.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": k.es.kid, "typ": "application/at+jwt"}, k.claims(nil)))
			}},
		{name: "token without kid tries the compatible keys", want: "allow", req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return bearerReq(k.es.tokenWithHeader(t, map[string]any{"alg": "ES256"}, k.claims(nil)))
		}},
		{name: "second provider picked by iss", want: "allow",
			cfg: func(c *Config) {
				c.Providers = append(c.Providers, Provider{Issuer: "https://other.test", Audiences: []string{"api2"}, JWKS: jwks(t, newTestKey(t, "ES256", "attacker"))})
			},
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.other.token(t, k.claims(func(c map[string]any) { c["iss"] = "https://other.test"; c["aud"] = "api2" })))
			}},
		{name: "first provider's audience is not the second's", want: "invalid_token",
			cfg: func(c *Config) {
				c.Providers = append(c.Providers, Provider{Issuer: "https://other.test", Audiences: []string{"api2"}, JWKS: jwks(t, newTestKey(t, "ES256", "attacker"))})
			},
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return bearerReq(k.other.token(t, k.claims(func(c map[string]any) { c["iss"] = "https://other.test" })))
			}},
	})
}

// Route policy: public, optional or required routes, the roles and scopes
// they need, and CORS preflights.
func TestCheckRoutePolicy(t *testing.T) {
	t.Parallel()
	routes := func(c *Config) {
		c.Routes = []Route{
			{PathPrefix: "/public/", Action: ActionPublic},
			{Path: "/me", Methods: []string{"GET"}, Action: ActionOptional},
			{Host: "*.admin.test", Action: ActionRequired, RolesAny: []string{"admin", "ops"}},
			{PathPrefix: "/write/", Action: ActionRequired, ScopesAll: []string{"read", "write", "delete"}},
			{PathPrefix: "/read/", Action: ActionRequired, ScopesAll: []string{"read"}},
		}
	}
	bad := func(t *testing.T, k *kit) string {
		return k.other.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": k.es.kid}, k.claims(nil))
	}
	identityRemoved := func(t *testing.T, a answer) {
		if len(a.set) != 0 {
			t.Errorf("anonymous allow set headers %v", a.set)
		}
		if diff := cmp.Diff([]string{"x-user-id", "x-user-name", "x-user-roles", "x-session-id"}, a.removed); diff != "" {
			t.Errorf("headers_to_remove (-want +got):\n%s", diff)
		}
	}
	runCheckCases(t, []checkCase{
		{name: "public without token", want: "allow", cfg: routes, verify: identityRemoved, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/public/logo.png", map[string]string{"x-user-id": "admin"})
		}},
		{name: "public with valid token injects identity", want: "allow", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/public/x", map[string]string{"authorization": "Bearer " + k.es.token(t, k.claims(nil))})
		}, verify: func(t *testing.T, a answer) {
			if a.set["x-user-id"] != "user-1" {
				t.Errorf("x-user-id = %q", a.set["x-user-id"])
			}
		}},
		{name: "public with invalid token is anonymous", want: "allow", cfg: routes, verify: identityRemoved, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/public/x", map[string]string{"authorization": "Bearer " + bad(t, k)})
		}},
		{name: "optional without token", want: "allow", cfg: routes, verify: identityRemoved, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/me", nil)
		}},
		{name: "optional with invalid token is denied", want: "invalid_token", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/me", map[string]string{"authorization": "Bearer " + bad(t, k)})
		}},
		{name: "optional rule is method-specific", want: "missing_token", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("POST", "app.test", "/me", nil)
		}},
		{name: "default is required", want: "missing_token", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/other", nil)
		}},
		{name: "dot segments cannot escape a public prefix", want: "missing_token", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("GET", "app.test", "/public/%2e%2e/secret", nil)
		}},
		{name: "roles_any met", want: "allow", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			r := bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["roles"] = []string{"user", "ops"} })))
			r.Attributes.Request.Http.Host = "eu.admin.test:443"
			return r
		}},
		{name: "roles_any not met", want: "insufficient_scope", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			r := bearerReq(k.es.token(t, k.claims(nil)))
			r.Attributes.Request.Http.Host = "eu.admin.test"
			return r
		}, verify: func(t *testing.T, a answer) {
			if a.status != 403 {
				t.Errorf("status %d, want 403", a.status)
			}
		}},
		{name: "roles from a dotted claim path", want: "allow",
			cfg: func(c *Config) { routes(c); c.Authorization.RolesClaim = "realm_access.roles" },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				r := bearerReq(k.es.token(t, k.claims(func(c map[string]any) { c["realm_access"] = map[string]any{"roles": []string{"admin"}} })))
				r.Attributes.Request.Http.Host = "x.admin.test"
				return r
			}},
		{name: "scopes_all met", want: "allow", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			r := bearerReq(k.es.token(t, k.claims(nil)))
			r.Attributes.Request.Http.Path = "/read/x"
			return r
		}},
		{name: "scopes_all not met names the scope", want: "insufficient_scope", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			r := bearerReq(k.es.token(t, k.claims(nil)))
			r.Attributes.Request.Http.Path = "/write/x"
			return r
		}, verify: func(t *testing.T, a answer) {
			want := `Bearer realm="tokengate", error="insufficient_scope", error_description="the token lacks a required scope", reason="insufficient_scope", scope="read write delete"`
			if a.set["www-authenticate"] != want {
				t.Errorf("www-authenticate\n got %s\nwant %s", a.set["www-authenticate"], want)
			}
		}},
		{name: "CORS preflight passes without a token", want: "allow", cfg: routes, verify: identityRemoved, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("OPTIONS", "app.test", "/api/x", map[string]string{"origin": "https://app.test", "access-control-request-method": "POST"})
		}},
		{name: "plain OPTIONS is not a preflight", want: "missing_token", cfg: routes, req: func(t *testing.T, k *kit) *authv3.CheckRequest {
			return checkReq("OPTIONS", "app.test", "/api/x", nil)
		}},
		{name: "preflight pass can be switched off", want: "missing_token",
			cfg: func(c *Config) { f := false; c.CORS.AllowPreflight = &f },
			req: func(t *testing.T, k *kit) *authv3.CheckRequest {
				return checkReq("OPTIONS", "app.test", "/api/x", map[string]string{"origin": "https://app.test", "access-control-request-method": "POST"})
			}},
	})
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The gRPC error contract of an infrastructure failure: a provider that
// never loaded keys answers UNAVAILABLE, never a silent allow.
func TestCheckUnavailableWithoutKeys(t *testing.T) {
	t.Parallel()
	srv := newFailingJWKS(t)
	k := newTestKey(t, "ES256", "es-1")
	cfg := Config{
		Providers: []Provider{{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: srv.URL}},
		Routes:    []Route{{PathPrefix: "/public/", Action: ActionPublic}},
	}
	h := newHarness(t, cfg)
	tok := k.token(t, claimsAt(h.clock.Now()))
	_, err := h.srv.Check(context.Background(), bearerReq(tok))
	if code := grpcCode(err); code != "Unavailable" {
		t.Fatalf("Check error %v (code %s), want Unavailable", err, code)
	}
	// A missing token on a required route is still a plain 401: no keys are needed to say so.
	if got := h.check(t, checkReq("GET", "app.test", "/x", nil)).reason(); got != "missing_token" {
		t.Fatalf("no token: %s", got)
	}
	// A public route needs no keys: let through anonymously.
	r := bearerReq(tok)
	r.Attributes.Request.Http.Path = "/public/a"
	if got := h.check(t, r).reason(); got != "allow" {
		t.Fatalf("public route: %s", got)
	}
	if h.srv.Ready() {
		t.Fatal("Ready() with no keys loaded")
	}
}

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/api/x?q=1":         "/api/x",
		"/public/../admin":   "/admin",
		"/public/%2e%2e/a":   "/a",
		"/public/%2E%2E%2Fa": "/a",
		"//a///b/":           "/a/b/",
		"/a/./b/.":           "/a/b",
		"a/b":                "/a/b",
		"":                   "/",
		"/a\\..\\b":          "/b",
		"/x#frag":            "/x",
		"/%zz":               "/%zz",
		"/plain/path/":       "/plain/path/",
	} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}
