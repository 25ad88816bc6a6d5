package extauthz

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
)

// appsConfig serves three rule sets: the top-level default app (the
// provider's audience "api", default identity headers), "web" (its own
// routes, same audiences and headers as the default) and "admin" (its own
// audiences, identity mapping and routes), selected by the context
// extension app.
func appsConfig(t *testing.T, k *testKey) Config {
	cfg := baseConfig(t, k)
	cfg.Routes = []Route{
		{PathPrefix: "/internal/", Action: ActionPublic, ContextExtensions: map[string]string{"tier": "internal"}},
	}
	cfg.Apps = []App{
		{
			Name:   "web",
			Match:  AppMatch{ContextExtensions: map[string]string{"app": "web"}},
			Routes: []Route{{PathPrefix: "/public/", Action: ActionPublic}},
		},
		{
			Name:      "admin",
			Match:     AppMatch{ContextExtensions: map[string]string{"app": "admin"}},
			Routes:    []Route{{PathPrefix: "/admin/", Action: ActionRequired, RolesAny: []string{"admin"}}},
			Audiences: []string{"admin-console"},
			Headers:   &AppHeaders{Identity: []HeaderMapping{{Name: "x-admin-user", Claim: "sub"}}},
		},
	}
	return cfg
}

// withExt is req with context_extensions, as Envoy sends a route's
// check_settings.context_extensions.
func withExt(req *authv3.CheckRequest, ext map[string]string) *authv3.CheckRequest {
	req.Attributes.ContextExtensions = ext
	return req
}

func TestAppsSelectRules(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "apps")
	h := newHarness(t, appsConfig(t, k))
	now := h.clock.Now()
	apiTok := k.token(t, claimsAt(now))
	adminTok := k.token(t, with(with(claimsAt(now), "aud", "admin-console"), "roles", []string{"admin"}))
	userAdminTok := k.token(t, with(claimsAt(now), "aud", "admin-console"))

	for _, tc := range []struct {
		name    string
		ext     map[string]string
		path    string
		token   string
		want    string            // "allow" or the denial's error
		set     map[string]string // identity headers set (allow)
		removed []string          // among the headers removed (allow)
	}{
		{name: "no selector: the default app", path: "/api/x", token: apiTok, want: "allow",
			set: map[string]string{"x-user-id": "user-1", "x-user-name": "Ada", "x-user-roles": "user", "x-session-id": "sess-1"}, removed: []string{"x-admin-user"}},
		{name: "default app needs a token", path: "/public/x", want: "missing_token"},
		{name: "another extension alone selects nothing", ext: map[string]string{"other": "admin"}, path: "/api/x", token: apiTok, want: "allow",
			set: map[string]string{"x-user-id": "user-1", "x-user-name": "Ada", "x-user-roles": "user", "x-session-id": "sess-1"}},
		{name: "web: its public route", ext: map[string]string{"app": "web"}, path: "/public/x", want: "allow",
			removed: []string{"x-user-id", "x-user-name", "x-user-roles", "x-session-id", "x-admin-user"}},
		{name: "web: a token for the provider's audience", ext: map[string]string{"app": "web"}, path: "/api/x", token: apiTok, want: "allow",
			set: map[string]string{"x-user-id": "user-1", "x-user-name": "Ada", "x-user-roles": "user", "x-session-id": "sess-1"}, removed: []string{"x-admin-user"}},
		{name: "web: an admin-console token is not for it", ext: map[string]string{"app": "web"}, path: "/api/x", token: adminTok, want: "invalid_token"},
		{name: "admin: the provider's audience is not enough", ext: map[string]string{"app": "admin"}, path: "/admin/x", token: apiTok, want: "invalid_token"},
		{name: "admin: its audience and role", ext: map[string]string{"app": "admin"}, path: "/admin/x", token: adminTok, want: "allow",
			set: map[string]string{"x-admin-user": "user-1"}, removed: []string{"x-user-id", "x-user-name", "x-user-roles", "x-session-id"}},
		{name: "admin: its audience without the role", ext: map[string]string{"app": "admin"}, path: "/admin/x", token: userAdminTok, want: "insufficient_scope"},
		{name: "admin: web's public route is not admin's", ext: map[string]string{"app": "admin"}, path: "/public/x", want: "missing_token"},
		{name: "admin: anonymous answers strip every app's headers", ext: map[string]string{"app": "admin"}, path: "/public/x", token: "", want: "missing_token"},
		{name: "unknown app: denied, never another app's rules", ext: map[string]string{"app": "nope"}, path: "/public/x", want: "unknown_app"},
		{name: "unknown app with a valid token", ext: map[string]string{"app": "Web"}, path: "/api/x", token: apiTok, want: "unknown_app"},
		{name: "route context_extensions match", ext: map[string]string{"tier": "internal"}, path: "/internal/x", want: "allow",
			removed: []string{"x-user-id", "x-admin-user"}},
		{name: "route context_extensions must be equal", ext: map[string]string{"tier": "public"}, path: "/internal/x", want: "missing_token"},
		{name: "route context_extensions absent", path: "/internal/x", want: "missing_token"},
		{name: "route context_extensions belong to their app", ext: map[string]string{"app": "web", "tier": "internal"}, path: "/internal/x", want: "missing_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			headers := map[string]string{"x-admin-user": "spoofed", "x-user-id": "spoofed"}
			if tc.token != "" {
				headers["authorization"] = "Bearer " + tc.token
			}
			a := h.check(t, withExt(checkReq("GET", "app.test", tc.path, headers), tc.ext))
			if got := a.reason(); got != tc.want {
				t.Fatalf("answer %s (%+v), want %s", got, a, tc.want)
			}
			if !a.allowed {
				if tc.want == "unknown_app" && a.status != http.StatusForbidden {
					t.Errorf("unknown_app status %d, want 403", a.status)
				}
				return
			}
			got := map[string]string{}
			for name, v := range a.set {
				got[name] = v
			}
			if tc.set == nil {
				tc.set = map[string]string{}
			}
			if diff := cmp.Diff(tc.set, got); diff != "" {
				t.Errorf("identity headers (-want +got):\n%s", diff)
			}
			for _, name := range tc.removed {
				if !slices.Contains(a.removed, name) {
					t.Errorf("%s not removed (removed %v)", name, a.removed)
				}
			}
			for name := range a.set {
				if slices.Contains(a.removed, name) {
					t.Errorf("%s both set and removed", name)
				}
			}
		})
	}
}

// The verified-token cache must not carry an allow from one app to
// another: a token cached as valid for one app's audiences and headers is
// judged afresh for an app with other ones, in either order.
func TestAppsCacheDoesNotLeak(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "leak")
	cfg := appsConfig(t, k)
	// admin accepts "api" too, but maps other headers.
	cfg.Apps[1].Audiences = []string{"admin-console", testAudience}
	cfg.Apps[1].Routes = nil
	cfg.Apps = append(cfg.Apps, App{Name: "strict", Match: AppMatch{ContextExtensions: map[string]string{"app": "strict"}}, Audiences: []string{"elsewhere"}})
	h := newHarness(t, cfg)
	tok := k.token(t, claimsAt(h.clock.Now()))
	req := func(app string) *authv3.CheckRequest {
		r := bearerReq(tok)
		if app != "" {
			r.Attributes.ContextExtensions = map[string]string{"app": app}
		}
		return r
	}
	for _, order := range [][]string{{"", "web", "admin", "strict"}, {"strict", "admin", "web", ""}} {
		for round := range 2 { // the second round answers from the cache
			for _, app := range order {
				a := h.check(t, req(app))
				switch app {
				case "strict":
					if a.reason() != "invalid_token" {
						t.Fatalf("order %v round %d: strict app (audience elsewhere) answered %s", order, round, a.reason())
					}
				case "admin":
					if !a.allowed || a.set["x-admin-user"] != "user-1" || a.set["x-user-id"] != "" || !slices.Contains(a.removed, "x-user-id") {
						t.Fatalf("order %v round %d: admin got %+v", order, round, a)
					}
				default:
					if !a.allowed || a.set["x-user-id"] != "user-1" || a.set["x-admin-user"] != "" || !slices.Contains(a.removed, "x-admin-user") {
						t.Fatalf("order %v round %d: app %q got %+v", order, round, app, a)
					}
				}
			}
		}
	}
	// The default app and web share audiences and headers, so one entry;
	// admin has its own. strict's refusal is not cached.
	c := h.srv.state.Load().cache
	canon := canonical(t, tok)
	if n := c.len(); n != 2 {
		t.Errorf("%d cache entries, want 2 (default and web share one; admin its own)", n)
	}
	def, admin := h.srv.state.Load().policy.def, h.srv.state.Load().policy.byName["admin"]
	if !c.containsIn(def.class, canon) || !c.containsIn(admin.class, canon) || def.class == admin.class {
		t.Errorf("classes default %d, admin %d: entries not where expected", def.class, admin.class)
	}
	if web := h.srv.state.Load().policy.byName["web"]; web.class != def.class {
		t.Errorf("web class %d, default %d: equal audiences and headers should share a class", web.class, def.class)
	}
}

// Forward-auth selects the app by forward_auth.app_header, which the proxy
// sets; Envoy's HTTP mode never reads it.
func TestAppsForwardAuth(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "fa-apps")
	cfg := appsConfig(t, k)
	cfg.ForwardAuth = ForwardAuthConfig{Proxy: ProxyNginx, AppHeader: "X-Tokengate-App"}
	h := newHarness(t, cfg)
	now := h.clock.Now()
	apiTok := k.token(t, claimsAt(now))
	adminTok := k.token(t, with(with(claimsAt(now), "aud", "admin-console"), "roles", []string{"admin"}))

	for _, tc := range []struct {
		name   string
		app    []string // values of X-Tokengate-App
		path   string
		token  string
		status int
		header string // an identity header set on a 200
	}{
		{name: "no app header: the default app", path: "/api/x", token: apiTok, status: 200, header: "X-User-Id"},
		{name: "no app header: default rules", path: "/public/x", status: 401},
		{name: "web by name", app: []string{"web"}, path: "/public/x", status: 200},
		{name: "admin by name", app: []string{"admin"}, path: "/admin/x", token: adminTok, status: 200, header: "X-Admin-User"},
		{name: "admin refuses the default audience", app: []string{"admin"}, path: "/admin/x", token: apiTok, status: 401},
		{name: "unknown app", app: []string{"nope"}, path: "/public/x", status: 403},
		{name: "empty app name", app: []string{""}, path: "/public/x", status: 403},
		{name: "the selector value is not the name", app: []string{"default"}, path: "/public/x", status: 403},
		{name: "appended to a client's copy", app: []string{"web", "admin"}, path: "/public/x", status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/authz", nil)
			r.Host = "app.test"
			r.Header.Set("X-Original-URI", tc.path)
			r.Header.Set("X-Original-Method", "GET")
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			for _, v := range tc.app {
				r.Header.Add("X-Tokengate-App", v)
			}
			w := httptest.NewRecorder()
			h.srv.Routes().ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 403 && !strings.Contains(w.Body.String(), `"unknown_app"`) {
				t.Errorf("body %s lacks unknown_app", w.Body)
			}
			if tc.header != "" && w.Header().Get(tc.header) != "user-1" {
				t.Errorf("%s = %q, want user-1 (headers %v)", tc.header, w.Header().Get(tc.header), w.Header())
			}
		})
	}

	t.Run("envoy HTTP mode never reads an app header", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, appsConfig(t, k))
		r := httptest.NewRequest("GET", "/authz/public/x", nil)
		r.Header.Set("X-Tokengate-App", "web") // a client's: would make /public/ public
		w := httptest.NewRecorder()
		h.srv.Routes().ServeHTTP(w, r)
		if w.Code != 401 {
			t.Fatalf("status %d, want 401 (the default app's rules)", w.Code)
		}
	})
}

func TestAppsConfigValidation(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "cfg-apps")
	web := func() App {
		return App{Name: "web", Match: AppMatch{ContextExtensions: map[string]string{"app": "web"}}}
	}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want []string // every error, with its path
	}{
		{name: "valid", mod: func(*Config) {}},
		{name: "duplicate names and values", mod: func(c *Config) {
			c.Apps = append(c.Apps, web())
		}, want: []string{
			`apps[1].name: duplicates apps[0].name`,
			`apps[1].match.context_extensions: app: web also selects apps[0]`,
		}},
		{name: "names", mod: func(c *Config) {
			a, b := web(), web()
			a.Name, b.Name = "", "default"
			b.Match.ContextExtensions = map[string]string{"app": "b"}
			c.Apps = []App{a, b}
			c.Apps = append(c.Apps, App{Name: "a b", Match: AppMatch{ContextExtensions: map[string]string{"app": "c"}}})
		}, want: []string{
			`apps[0].name: is required`,
			`apps[1].name: "default" is the top-level rule set`,
			`apps[2].name: "a b" must be a token (letters, digits, -, _, .)`,
		}},
		{name: "match", mod: func(c *Config) {
			c.Apps = []App{
				{Name: "a"},
				{Name: "b", Match: AppMatch{ContextExtensions: map[string]string{"app": "b", "x": "y"}}},
				{Name: "c", Match: AppMatch{ContextExtensions: map[string]string{"app": "c"}}},
				{Name: "d", Match: AppMatch{ContextExtensions: map[string]string{"service": "d"}}},
				{Name: "e", Match: AppMatch{ContextExtensions: map[string]string{"app": ""}}},
			}
		}, want: []string{
			`apps[0].match.context_extensions: must have exactly one key and value (e.g. app: web), not 0`,
			`apps[1].match.context_extensions: must have exactly one key and value (e.g. app: web), not 2`,
			`apps[3].match.context_extensions: key "service" differs from apps[2]'s "app": every app is selected by the same key`,
			`apps[4].match.context_extensions: the key and value must not be empty`,
		}},
		{name: "routes, action, audiences, headers", mod: func(c *Config) {
			a := web()
			a.Routes = []Route{{Path: "x", Action: "maybe"}, {PathPrefix: "/p/", Action: ActionPublic, ContextExtensions: map[string]string{"k": ""}}}
			a.DefaultAction = "sometimes"
			a.Audiences = []string{""}
			a.Headers = &AppHeaders{Identity: []HeaderMapping{{Name: "cookie", Claim: "sub"}, {Name: "x-ok", Claim: "a..b"}}, PayloadHeader: "x-ok"}
			c.Apps = []App{a}
			c.Routes = []Route{{Action: ActionPublic, ContextExtensions: map[string]string{"": "v"}}}
		}, want: []string{
			`routes[0].context_extensions: the key and value must not be empty`,
			`apps[0].routes[0].action: must be public, optional or required, not "maybe"`,
			`apps[0].routes[0].path: must start with /`,
			`apps[0].routes[1].context_extensions: the key and value must not be empty`,
			`apps[0].default_action: must be public, optional or required, not "sometimes"`,
			`apps[0].audiences[0]: must not be empty`,
			`apps[0].headers.identity[0].name: "cookie" is reserved: it carries credentials`,
			`apps[0].headers.identity[1].claim: "a..b" has an empty segment`,
			`apps[0].headers.payload_header: header "x-ok" is also set by apps[0].headers.identity[1].name`,
		}},
		{name: "app_header under envoy", mod: func(c *Config) {
			c.ForwardAuth.AppHeader = "x-tokengate-app"
		}, want: []string{
			`forward_auth.app_header: needs forward_auth.proxy nginx, traefik or caddy (Envoy selects apps with context_extensions over gRPC)`,
		}},
		{name: "app_header without apps", mod: func(c *Config) {
			c.Apps = nil
			c.ForwardAuth = ForwardAuthConfig{Proxy: ProxyCaddy, AppHeader: "x-tokengate-app"}
		}, want: []string{`forward_auth.app_header: there are no apps to select`}},
		{name: "app_header names", mod: func(c *Config) {
			c.ForwardAuth = ForwardAuthConfig{Proxy: ProxyNginx, AppHeader: "X-Original-App"}
		}, want: []string{`forward_auth.app_header: "X-Original-App" is reserved: it belongs to the proxy (nginx auth_request)`}},
		{name: "app_header is the client's", mod: func(c *Config) {
			c.ForwardAuth = ForwardAuthConfig{Proxy: ProxyNginx, AppHeader: "Origin"}
		}, want: []string{`forward_auth.app_header: "Origin" is the client's own header`}},
		{name: "app_header is an identity header", mod: func(c *Config) {
			c.ForwardAuth = ForwardAuthConfig{Proxy: ProxyNginx, AppHeader: "X-User-Id"}
		}, want: []string{`headers.identity[0].name: "x-user-id" is forward_auth.app_header`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t, k)
			cfg.Apps = []App{web()}
			tc.mod(&cfg)
			err := cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// Config files spell apps as an Envoy user would.
func TestAppsParse(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte(`
providers:
- issuer: https://issuer.test
  audiences: [api]
  jwks_url: https://issuer.test/jwks
routes:
- path_prefix: /healthz
  action: public
apps:
- name: admin
  match:
    context_extensions: {app: admin}
  audiences: [admin-console]
  default_action: required
  routes:
  - path_prefix: /admin/
    action: required
    roles_any: [admin]
  headers:
    identity:
    - {name: x-admin-user, claim: sub}
forward_auth:
  proxy: nginx
  app_header: x-tokengate-app
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Apps[0].Match.ContextExtensions["app"] != "admin" || c.Apps[0].Headers.Identity[0].Name != "x-admin-user" {
		t.Errorf("decoded %+v", c.Apps[0])
	}
	if _, err := ParseConfig([]byte("apps:\n- name: a\n  match: {context_extension: {app: a}}\n")); err == nil {
		t.Error("a misspelt match field was accepted")
	}
}

// The extauthz configuration shipped beside the Envoy examples decodes,
// validates, and gives its two apps different rules.
func TestAppsEnvoyExampleConfig(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig("../examples/envoy/extauthz-apps.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := newPolicy(c.WithDefaults())
	web, admin := p.byValue["web"], p.byValue["admin"]
	if web == nil || admin == nil || web.class == admin.class {
		t.Fatalf("apps web %v, admin %v: want both, with different audiences and headers", web, admin)
	}
	in := request{method: "GET", host: "app.test", path: "/public/x"}
	if web.match(&in).action != ActionPublic || admin.match(&in).action != ActionRequired {
		t.Error("/public/x: want public for web, required for admin")
	}
}
