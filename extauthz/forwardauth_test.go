package extauthz

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Forward-auth copies only decisionHeaders from the request: every header
// the decision reads (request.header("…") anywhere in the package) must be
// listed, under its canonical name, or forward-auth would silently not see
// it.
func TestDecisionHeadersCoverEveryRead(t *testing.T) {
	t.Parallel()
	var listed []string
	for _, n := range decisionHeaders {
		if n.lower != strings.ToLower(n.lower) || n.canonical != http.CanonicalHeaderKey(n.lower) {
			t.Errorf("decisionHeaders entry %+v: lower or canonical name wrong", n)
		}
		listed = append(listed, n.lower)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	read := regexp.MustCompile(`\.header\("([^"]+)"\)`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range read.FindAllStringSubmatch(string(src), -1) {
			found++
			if !slices.Contains(listed, m[1]) {
				t.Errorf("%s reads header %q, which forward-auth does not copy (add it to decisionHeaders)", f, m[1])
			}
		}
	}
	if found < len(decisionHeaders) {
		t.Fatalf("found %d header reads, fewer than the %d listed: the pattern no longer matches the code", found, len(decisionHeaders))
	}
}

// fwdCase is one forward-auth request and what it must get.
type fwdCase struct {
	name    string
	method  string // of the auth request
	target  string // of the auth request
	host    string // of the auth request; "" is extauthz.test
	headers map[string]string
	status  int
	error   string            // JSON error, when status is not 200
	want    map[string]string // response headers ("" = absent)
}

// fwdConfig: public /public/, admin-only /admin/, an allowed origin,
// and forward_auth.proxy = proxy.
func fwdConfig(t *testing.T, k *testKey, proxy string) Config {
	cfg := baseConfig(t, k)
	cfg.Routes = []Route{
		{PathPrefix: "/public/", Action: ActionPublic},
		{PathPrefix: "/admin/", Action: ActionRequired, RolesAny: []string{"admin"}},
		{Host: "public.test", Action: ActionPublic},
	}
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	cfg.ForwardAuth.Proxy = proxy
	return cfg
}

// runFwd sends each case through h's HTTP routes (in memory: the handler
// is what is tested here; TestForwardAuth uses real sockets).
func runFwd(t *testing.T, h *harness, cases []fwdCase) {
	t.Helper()
	routes := h.srv.Routes()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			r.Host = "extauthz.test"
			if tc.host != "" {
				r.Host = tc.host
			}
			for k, v := range tc.headers {
				for _, one := range strings.Split(v, "\x00") { // \x00 separates repeated values
					r.Header.Add(k, one)
				}
			}
			w := httptest.NewRecorder()
			routes.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.status, w.Body.String())
			}
			if tc.error != "" {
				var b map[string]string
				if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b["error"] != tc.error {
					t.Fatalf("body %s, want error %s", w.Body.String(), tc.error)
				}
			}
			for k, v := range tc.want {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// Forward-auth over real loopback HTTP gives the gRPC decisions,
// reading the original request by the configured proxy's convention.
func TestForwardAuth(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h0 := newHarness(t, fwdConfig(t, k, ""))
	tok := k.token(t, claimsAt(h0.clock.Now()))
	expired := k.token(t, with(claimsAt(h0.clock.Now()), "exp", h0.clock.Now().Add(-time.Hour).Unix()))

	type want struct {
		status  int
		error   string
		headers map[string]string
	}
	cases := []struct {
		name    string
		proxy   string
		method  string
		path    string
		headers map[string]string
		want    want
	}{
		{"envoy http mode (default): prefix path", "", "GET", "/authz/api/x?q=1", map[string]string{"Authorization": "Bearer " + tok},
			want{200, "", map[string]string{"X-User-Id": "user-1", "X-Token-Expires-In": "900"}}},
		{"envoy http mode: public path", "envoy", "POST", "/authz/public/a", nil,
			want{200, "", map[string]string{"X-Envoy-Auth-Headers-To-Remove": "x-user-id,x-user-name,x-user-roles,x-session-id", "X-User-Id": ""}}},
		{"envoy http mode: missing token", "envoy", "GET", "/authz/api/x", map[string]string{"Origin": "https://app.test"},
			want{401, "missing_token", map[string]string{"Www-Authenticate": `Bearer realm="tokengate"`, "Access-Control-Allow-Origin": "https://app.test", "Cache-Control": "no-store", "Content-Type": "application/json"}}},
		{"nginx: X-Original-URI decides the route", "nginx", "GET", "/authz", map[string]string{"X-Original-URI": "/public/a", "X-Original-Method": "GET"}, want{200, "", nil}},
		{"nginx: protected original URI", "nginx", "GET", "/authz", map[string]string{"X-Original-URI": "/admin/x", "X-Original-Method": "GET", "Authorization": "Bearer " + tok},
			want{403, "insufficient_scope", nil}},
		{"traefik: X-Forwarded-Uri/Method/Host", "traefik", "GET", "/authz/", map[string]string{"X-Forwarded-Uri": "/api/x", "X-Forwarded-Method": "DELETE", "X-Forwarded-Host": "app.test", "Authorization": "bearer " + expired},
			want{401, "token_expired", map[string]string{"Www-Authenticate": `Bearer realm="tokengate", error="invalid_token", error_description="the token has expired", reason="token_expired"`}}},
		{"caddy: same headers, public", "caddy", "GET", "/authz/", map[string]string{"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "app.test"}, want{200, "", nil}},
	}
	webs := map[string]string{}
	for _, p := range []string{"", ProxyEnvoy, ProxyNginx, ProxyTraefik, ProxyCaddy} {
		h := newHarness(t, fwdConfig(t, k, p))
		web := httptest.NewServer(h.srv.Routes())
		t.Cleanup(web.Close)
		webs[p] = web.URL
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest(tc.method, webs[tc.proxy]+tc.path, nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want.status, body)
			}
			if tc.want.error != "" {
				var b map[string]string
				if err := json.Unmarshal(body, &b); err != nil || b["error"] != tc.want.error {
					t.Fatalf("body %s, want error %s", body, tc.want.error)
				}
			}
			for k, v := range tc.want.headers {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// The client cannot choose what is judged. Each proxy
// convention reads only its own headers; another family's headers (which
// the proxy passes through untouched) are never consulted, and a repeated
// header (the proxy appended instead of overwriting) is refused.
// The first case is the reported bypass: DELETE /api/users/1 passed as a
// CORS preflight.
func TestForwardAuthClientCannotChooseWhatIsJudged(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	preflightTrick := map[string]string{
		"X-Forwarded-Method": "OPTIONS", "X-Original-Method": "OPTIONS",
		"Origin": "https://app.test", "Access-Control-Request-Method": "DELETE",
	}
	merge := func(a, b map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range a {
			out[k] = v
		}
		for k, v := range b {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		proxy string
		cases []fwdCase
	}{
		{ProxyNginx, []fwdCase{
			{name: "reported bypass: DELETE with X-Forwarded-Method OPTIONS", method: "GET", target: "/authz/",
				headers: merge(preflightTrick, map[string]string{"X-Original-Method": "DELETE", "X-Original-Uri": "/api/users/1"}),
				status:  401, error: "missing_token"},
			{name: "X-Forwarded-Uri does not override X-Original-URI", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Original-Uri": "/api/users/1", "X-Original-Method": "DELETE", "X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET"},
				status:  401, error: "missing_token"},
			{name: "X-Forwarded-Host does not override Host", method: "GET", target: "/authz/", host: "app.test",
				headers: map[string]string{"X-Original-Uri": "/api/x", "X-Original-Method": "GET", "X-Forwarded-Host": "public.test"},
				status:  401, error: "missing_token"},
			{name: "the auth request's own path is not read", method: "GET", target: "/authz/public/x",
				headers: map[string]string{"X-Original-Uri": "/api/x", "X-Original-Method": "GET"},
				status:  401, error: "missing_token"},
			{name: "repeated X-Original-URI (appended, not overwritten)", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Original-Uri": "/public/x\x00/api/x", "X-Original-Method": "GET"},
				status:  400, error: "invalid_request"},
			{name: "X-Original-Method missing", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Original-Uri": "/public/x"}, status: 400, error: "invalid_request"},
			{name: "X-Original-URI missing", method: "GET", target: "/authz/public/x",
				headers: map[string]string{"X-Original-Method": "GET"}, status: 400, error: "invalid_request"},
			{name: "a real preflight", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Original-Uri": "/api/x", "X-Original-Method": "OPTIONS", "Origin": "https://app.test", "Access-Control-Request-Method": "DELETE"},
				status:  200},
		}},
		{ProxyTraefik, []fwdCase{
			{name: "X-Original-* are not read", method: "GET", target: "/authz/",
				headers: merge(preflightTrick, map[string]string{"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/api/users/1", "X-Forwarded-Host": "app.test", "X-Original-Uri": "/public/x"}),
				status:  401, error: "missing_token"},
			{name: "Host does not replace X-Forwarded-Host", method: "GET", target: "/authz/", host: "public.test",
				headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/x", "X-Forwarded-Host": "app.test"},
				status:  401, error: "missing_token"},
			{name: "X-Forwarded-Host missing", method: "GET", target: "/authz/", host: "public.test",
				headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/x"}, status: 400, error: "invalid_request"},
			{name: "X-Forwarded-Method missing: not the auth request's GET", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Forwarded-Uri": "/public/x", "X-Forwarded-Host": "app.test"}, status: 400, error: "invalid_request"},
			{name: "repeated X-Forwarded-Method", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Forwarded-Method": "OPTIONS\x00DELETE", "X-Forwarded-Uri": "/api/x", "X-Forwarded-Host": "app.test", "Origin": "https://app.test", "Access-Control-Request-Method": "DELETE"},
				status:  400, error: "invalid_request"},
		}},
		{ProxyCaddy, []fwdCase{
			{name: "X-Original-Method does not override", method: "GET", target: "/authz/",
				headers: map[string]string{"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/api/users/1", "X-Forwarded-Host": "app.test", "X-Original-Method": "OPTIONS", "Origin": "https://app.test", "Access-Control-Request-Method": "DELETE"},
				status:  401, error: "missing_token"},
		}},
		{ProxyEnvoy, []fwdCase{
			{name: "no X-* header is read", method: "DELETE", target: "/authz/api/users/1", host: "app.test",
				headers: merge(preflightTrick, map[string]string{"X-Forwarded-Host": "public.test"}),
				status:  401, error: "missing_token"},
			{name: "X-Original-URI (nginx left on the default): refused", method: "GET", target: "/authz/", host: "public.test",
				headers: map[string]string{"X-Original-Uri": "/api/x", "X-Original-Method": "GET"}, status: 400, error: "invalid_request"},
			{name: "X-Forwarded-Uri (Caddy, Traefik left on the default): refused", method: "GET", target: "/authz/", host: "public.test",
				headers: map[string]string{"X-Forwarded-Uri": "/api/x", "X-Forwarded-Method": "GET"}, status: 400, error: "invalid_request"},
			{name: "a real preflight", method: "OPTIONS", target: "/authz/api/users/1", host: "app.test",
				headers: map[string]string{"Origin": "https://app.test", "Access-Control-Request-Method": "DELETE"}, status: 200},
		}},
	} {
		t.Run(tc.proxy, func(t *testing.T) {
			t.Parallel()
			runFwd(t, newHarness(t, fwdConfig(t, k, tc.proxy)), tc.cases)
		})
	}
}

// A refused forward-auth request is an error outcome, counted and logged
// with the header it lacks, never a decision.
func TestForwardAuthMissingHeaderCountedAndLogged(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, fwdConfig(t, k, ProxyNginx))
	runFwd(t, h, []fwdCase{{name: "no X-Original-*", method: "GET", target: "/authz/api/x", status: 400, error: "invalid_request"}})
	if n := counterValue(t, h.srv.metrics.checkCounters[checkLabels{decisionError, ReasonForwardAuthHeaders}]); n != 1 {
		t.Fatalf("checks_total{error,forward_auth_headers} = %v, want 1", n)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "X-Original-URI") || !strings.Contains(logs, `"reason":"forward_auth_headers"`) {
		t.Fatalf("log does not name the missing header:\n%s", logs)
	}
}

// A request is a preflight only when it is one: OPTIONS
// as reported, Origin and Access-Control-Request-Method present, and the
// Origin allowed when CORS origins are configured (gRPC path).
func TestPreflightOnlyWhenItIsOne(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	withOrigins := newHarness(t, fwdConfig(t, k, ""))
	noOrigins := baseConfig(t, k)
	without := newHarness(t, noOrigins)
	pf := func(method, origin string) map[string]string {
		h := map[string]string{"access-control-request-method": "DELETE"}
		if origin != "" {
			h["origin"] = origin
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		h      *harness
		method string
		hdrs   map[string]string
		want   string
	}{
		{"allowed origin", withOrigins, "OPTIONS", pf("OPTIONS", "https://app.test"), "allow"},
		{"foreign origin", withOrigins, "OPTIONS", pf("OPTIONS", "https://evil.test"), "missing_token"},
		{"origin null", withOrigins, "OPTIONS", pf("OPTIONS", "null"), "missing_token"},
		{"no origin", withOrigins, "OPTIONS", pf("OPTIONS", ""), "missing_token"},
		{"not OPTIONS", withOrigins, "DELETE", pf("DELETE", "https://app.test"), "missing_token"},
		{"no request method", withOrigins, "OPTIONS", map[string]string{"origin": "https://app.test"}, "missing_token"},
		{"no origins configured: any origin", without, "OPTIONS", pf("OPTIONS", "https://evil.test"), "allow"},
		{"no origins configured: no origin", without, "OPTIONS", pf("OPTIONS", ""), "missing_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := tc.h.check(t, checkReq(tc.method, "app.test", "/api/users/1", tc.hdrs))
			if got := a.reason(); got != tc.want {
				t.Fatalf("%s, want %s", got, tc.want)
			}
		})
	}
}

// "*" with credentials is refused at validation (it
// reflected any origin, null included, with allow-credentials), and null
// is never reflected.
func TestCORSWildcard(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test", "*"}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "cors.allowed_origins[1]: \"*\" cannot be used with credentials") {
		t.Fatalf(`["*"] with allow_credentials (default true): %v`, err)
	}
	no := false
	cfg.CORS.AllowCredentials = &no
	h := newHarness(t, cfg)
	for origin, want := range map[string]string{"null": "", "https://any.test": "https://any.test"} {
		a := h.check(t, checkReq("GET", "app.test", "/api/x", map[string]string{"origin": origin}))
		if a.status != 401 || a.set["access-control-allow-origin"] != want || a.set["access-control-allow-credentials"] != "" {
			t.Errorf("Origin %s: %d, allow-origin %q (want %q), allow-credentials %q", origin, a.status, a.set["access-control-allow-origin"], want, a.set["access-control-allow-credentials"])
		}
	}
}

func TestForwardAuthProxyValidated(t *testing.T) {
	t.Parallel()
	cfg := baseConfig(t, newTestKey(t, "ES256", "es-1"))
	cfg.ForwardAuth.Proxy = "haproxy"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "forward_auth.proxy: must be envoy, nginx, traefik or caddy") {
		t.Fatalf("proxy haproxy: %v", err)
	}
	c, err := ParseConfig([]byte("providers: []\nforward_auth: {proxy: nginx, trust: all}\n"))
	if err == nil {
		t.Fatalf("unknown forward_auth field accepted: %+v", c)
	}
}

// An infrastructure failure over forward-auth is 503 with Retry-After, so
// a proxy can pass it on as such (examples/nginx maps it from its 500).
func TestForwardAuthUnavailableHasRetryAfter(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := fwdConfig(t, k, ProxyNginx)
	cfg.Providers[0].JWKS = nil
	cfg.Providers[0].JWKSURL = newFailingJWKS(t).URL
	h := newHarness(t, cfg)
	tok := k.token(t, claimsAt(h.clock.Now()))
	runFwd(t, h, []fwdCase{{name: "keys not loaded", method: "GET", target: "/authz/",
		headers: map[string]string{"X-Original-Uri": "/api/x", "X-Original-Method": "GET", "Authorization": "Bearer " + tok},
		status:  503, error: "temporarily_unavailable", want: map[string]string{"Retry-After": "1", "Cache-Control": "no-store"}}})
}
