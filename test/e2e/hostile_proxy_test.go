package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/internal/proctest"
)

// The hostile-client suite: real tokengate processes
// behind the shipped proxy examples — nginx rendered from
// examples/nginx/tokengate.conf and Caddy from examples/caddy/Caddyfile —
// with a recording upstream app. For every hostile request it asserts the
// status the client gets and exactly which headers the upstream receives,
// or that the upstream receives nothing.
func TestHostileClientsThroughShippedProxies(t *testing.T) {
	redis := proctest.StartRedis(t)
	ref := startRefresher(t, "refresher", redis.Addr, signingKey(t))
	alice := createSession(t, ref, "alice") // roles [user]
	// A subject that is a Caddy placeholder: it must arrive as text.
	placeholderSub := createSession(t, ref, "{env.HOME}")
	app := newRecordingApp(t)

	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			t.Parallel()
			var bin string
			switch proxy {
			case "nginx":
				bin = proctest.RequireBinary(t, "nginx", "apt-get install -y nginx")
			case "caddy":
				bin = proctest.RequireBinary(t, "caddy", "apt-get install -y caddy")
			}
			authz := startForwardAuth(t, proxy, ref)
			p := proxied{name: proxy, app: app}
			switch proxy {
			case "nginx":
				p.base, p.host = startNginx(t, bin, authz, ref, app)
			case "caddy":
				p.base, p.host = startCaddy(t, bin, authz, ref, app)
			}
			hostileCases(t, p, alice, placeholderSub)
		})
	}
}

const (
	allowedOrigin = "https://app.e2e.test"
	downIssuer    = "https://down.e2e.test"
	publicHost    = "public.e2e.test"
)

// proxied is one proxy in front of the app.
type proxied struct {
	name string
	base string // http://127.0.0.1:PORT
	host string // the Host the upstream receives
	app  *recordingApp
}

// forwarding is what the proxy itself sets on every upstream request:
// the client's copies of these never arrive.
func (p proxied) forwarding() http.Header {
	h := http.Header{}
	h.Set("X-Forwarded-For", "127.0.0.1")
	h.Set("X-Forwarded-Proto", "http")
	h.Set("X-Forwarded-Host", p.host)
	h.Set("X-Real-Ip", "127.0.0.1")
	return h
}

// identity is what a valid token of sub's session s gives the upstream.
func identity(sub string, s tokenResponse) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+s.AccessToken)
	h.Set("X-User-Id", sub)
	h.Set("X-User-Name", "E2E "+sub)
	h.Set("X-User-Roles", "user")
	h.Set("X-Session-Id", s.SessionID)
	h.Set("X-Jwt-Payload", strings.Split(s.AccessToken, ".")[1])
	return h
}

// spoofed are identity headers a client made up, in every spelling an app
// might read as ours.
var spoofed = map[string]string{
	"X-User-Id": "admin", "X-User-Name": "Admin", "X-User-Roles": "admin", "X-Session-Id": "forged",
	"X-Jwt-Payload": base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","roles":["admin"]}`)),
	"x_user_id":     "admin", "X_User_Roles": "admin", "x-user_id": "admin", "x_session-id": "forged",
}

// forwardSpoof are forwarding and forward-auth headers a client made up.
var forwardSpoof = map[string]string{
	"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https", "X-Forwarded-Host": publicHost,
	"Forwarded": "for=203.0.113.66;host=" + publicHost + ";proto=https", "X-Real-Ip": "203.0.113.66",
	"X-Original-Uri": "/api/public/x", "X-Original-Method": "GET",
	"X-Forwarded-Uri": "/api/public/x", "X-Forwarded-Method": "GET",
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func headerOf(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h.Set(k, v)
	}
	return h
}

func join(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

type hostileCase struct {
	name    string
	method  string
	path    string
	headers map[string]string // sent by the client, names as written
	body    string
	status  int         // what the client gets
	client  http.Header // response headers the client must get (value "" = absent)
	// upstream is exactly the headers the app receives (besides
	// User-Agent, Accept-Encoding, Content-Length and the test's own
	// X-Test-Case), or nil: the app receives nothing.
	upstream http.Header
}

func hostileCases(t *testing.T, p proxied, alice, placeholderSub tokenResponse) {
	bearer := map[string]string{"Authorization": "Bearer " + alice.AccessToken}
	preflight := map[string]string{"Origin": allowedOrigin, "Access-Control-Request-Method": "DELETE"}
	unauth := http.Header{"Www-Authenticate": {`Bearer realm="tokengate"`}}
	cases := []hostileCase{
		// Good requests.
		{name: "valid token", method: "GET", path: "/api/things?x=1", headers: bearer, status: 200,
			client:   http.Header{"X-Token-Expires-In": {"*"}},
			upstream: join(p.forwarding(), identity("alice", alice))},
		{name: "valid token, POST body", method: "POST", path: "/api/things", headers: merge(bearer, map[string]string{"Content-Type": "text/plain"}), body: "hello", status: 200,
			upstream: join(p.forwarding(), identity("alice", alice), http.Header{"Content-Type": {"text/plain"}})},
		{name: "public route, no token", method: "GET", path: "/api/public/x", status: 200,
			upstream: p.forwarding()},
		{name: "claims that look like placeholders arrive as text", method: "GET", path: "/api/things",
			headers: map[string]string{"Authorization": "Bearer " + placeholderSub.AccessToken}, status: 200,
			upstream: join(p.forwarding(), identity("{env.HOME}", placeholderSub))},
		{name: "real preflight", method: "OPTIONS", path: "/api/users/1", headers: preflight, status: 200,
			upstream: join(p.forwarding(), headerOf(preflight))},

		// Forward-auth header overrides: the client cannot choose what is judged.
		{name: "reported bypass: DELETE posing as a preflight", method: "DELETE", path: "/api/users/1",
			headers: merge(preflight, map[string]string{"X-Forwarded-Method": "OPTIONS", "X-Original-Method": "OPTIONS"}),
			status:  401, client: unauth},
		{name: "X-Original-URI/X-Forwarded-Uri to a public path", method: "GET", path: "/api/things",
			headers: map[string]string{"X-Original-Uri": "/api/public/x", "X-Forwarded-Uri": "/api/public/x", "X-Original-Method": "GET", "X-Forwarded-Method": "GET"},
			status:  401, client: unauth},
		{name: "X-Forwarded-Host of a public host", method: "GET", path: "/api/things",
			headers: map[string]string{"X-Forwarded-Host": publicHost, "Forwarded": "host=" + publicHost},
			status:  401, client: unauth},
		{name: "all forwarding headers spoofed, valid token", method: "GET", path: "/api/things", headers: merge(bearer, forwardSpoof), status: 200,
			upstream: join(p.forwarding(), identity("alice", alice))},

		// Spoofed identity headers.
		{name: "spoofed identity, no token, protected route", method: "GET", path: "/api/things", headers: spoofed,
			status: 401, client: unauth},
		{name: "spoofed identity, no token, public route", method: "GET", path: "/api/public/x", headers: spoofed, status: 200,
			upstream: p.forwarding()},
		{name: "spoofed identity, valid token", method: "GET", path: "/api/things", headers: merge(spoofed, bearer), status: 200,
			upstream: join(p.forwarding(), identity("alice", alice))},
		{name: "spoofed identity, invalid token, public route", method: "GET", path: "/api/public/x",
			headers: merge(spoofed, map[string]string{"Authorization": "Bearer " + alice.AccessToken + "x"}), status: 200,
			upstream: join(p.forwarding(), http.Header{"Authorization": {"Bearer " + alice.AccessToken + "x"}})},
		{name: "spoofed admin role on an admin route", method: "GET", path: "/api/admin/x", headers: merge(spoofed, bearer),
			status: 403},

		// Preflight tricks.
		{name: "preflight from a foreign origin", method: "OPTIONS", path: "/api/users/1",
			headers: map[string]string{"Origin": "https://evil.e2e.test", "Access-Control-Request-Method": "DELETE"}, status: 401, client: unauth},
		{name: "preflight from origin null", method: "OPTIONS", path: "/api/users/1",
			headers: map[string]string{"Origin": "null", "Access-Control-Request-Method": "DELETE"}, status: 401,
			client: http.Header{"Www-Authenticate": {`Bearer realm="tokengate"`}, "Access-Control-Allow-Origin": {""}}},
		{name: "OPTIONS without Access-Control-Request-Method", method: "OPTIONS", path: "/api/users/1",
			headers: map[string]string{"Origin": allowedOrigin}, status: 401, client: unauth},

		// extauthz cannot decide: 503 with Retry-After, not the proxy's 500.
		{name: "keys not loaded: 503 with Retry-After", method: "GET", path: "/api/things", headers: map[string]string{"Authorization": "Bearer " + downToken(t)},
			status: 503, client: http.Header{"Retry-After": {"1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := p.name + ": " + tc.name
			got, hdr, body := p.send(t, id, tc)
			if got != tc.status {
				t.Fatalf("status %d, want %d (%s)", got, tc.status, body)
			}
			for k := range tc.client {
				switch v, gotV := tc.client.Get(k), hdr.Get(k); {
				case v == "*" && gotV == "":
					t.Errorf("client: %s missing", k)
				case v != "*" && gotV != v:
					t.Errorf("client: %s = %q, want %q", k, gotV, v)
				}
			}
			recs := p.app.take(id)
			if tc.upstream == nil {
				if len(recs) > 0 {
					t.Fatalf("the upstream received %s %s with %v; it must receive nothing", recs[0].method, recs[0].path, recs[0].header)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("the upstream received %d requests, want 1", len(recs))
			}
			r := recs[0]
			if r.method != tc.method || r.path != tc.path || r.host != p.host || r.body != tc.body {
				t.Errorf("upstream got %s %s Host %s body %q, want %s %s Host %s body %q", r.method, r.path, r.host, r.body, tc.method, tc.path, p.host, tc.body)
			}
			if diff := cmp.Diff(tc.upstream, r.header); diff != "" {
				t.Errorf("headers the upstream received (-want +got):\n%s", diff)
			}
		})
	}

	// nginx used to send Connection: close (its server-level
	// proxy_set_header lines were dropped): the keepalive pool was never used.
	t.Run("upstream keepalive", func(t *testing.T) {
		id := p.name + ": keepalive"
		for range 3 {
			if got, _, body := p.send(t, id, hostileCase{method: "GET", path: "/api/public/k"}); got != 200 {
				t.Fatalf("status %d (%s)", got, body)
			}
		}
		recs := p.app.take(id)
		if len(recs) != 3 || recs[0].remote != recs[1].remote || recs[1].remote != recs[2].remote {
			t.Fatalf("3 sequential requests reached the upstream over different connections: %v", recs)
		}
	})
}

// send makes one request through the proxy, tagged with X-Test-Case.
func (p proxied) send(t *testing.T, id string, tc hostileCase) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if tc.body != "" {
		body = strings.NewReader(tc.body)
	}
	req, err := http.NewRequest(tc.method, p.base+tc.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range tc.headers {
		req.Header[k] = []string{v} // names exactly as written (x_user_id)
	}
	req.Header.Set("X-Test-Case", id)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", tc.method, tc.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// downToken is a token of a provider whose keys never load.
func downToken(t *testing.T) string {
	seg := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sig := make([]byte, 64)
	rand.Read(sig)
	now := time.Now().Unix()
	return seg(map[string]any{"alg": "ES256", "kid": "down-1", "typ": "at+jwt"}) + "." +
		seg(map[string]any{"iss": downIssuer, "aud": audience, "sub": "mallory", "iat": now, "nbf": now, "exp": now + 600}) + "." +
		base64.RawURLEncoding.EncodeToString(sig)
}

// startForwardAuth starts `tokengate extauthz` for the proxy, trusting the
// refresher and a provider whose JWKS never loads, and returns its HTTP
// address once the refresher's keys are loaded.
func startForwardAuth(t *testing.T, proxy string, ref replica) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`providers:
  - name: refresher
    issuer: %s
    audiences: [%s]
    jwks_url: %s/.well-known/jwks.json
  - name: down
    issuer: %s
    audiences: [%s]
    jwks_url: http://127.0.0.1:%d/jwks.json
headers:
  payload_header: x-jwt-payload
routes:
  - {path_prefix: /api/public/, action: public}
  - {path_prefix: /api/admin/, action: required, roles_any: [admin]}
  - {host: %s, action: public}
cors:
  allowed_origins: [%s]
forward_auth:
  proxy: %s
`, issuer, audience, ref.URL, downIssuer, audience, proctest.FreePort(t), publicHost, allowedOrigin, proxy)
	path := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	p := proctest.Start(t, "extauthz-"+proxy, nil, proctest.Tokengate(t), "extauthz", "--config", path,
		"--http-listen", addr, "--grpc-listen", "127.0.0.1:"+strconv.Itoa(proctest.FreePort(t)), "--log-level", "warn")
	p.WaitHTTP(t, "http://"+addr+"/healthz", http.StatusOK, 20*time.Second)
	// /readyz stays 503 (the down provider): wait for the refresher's keys.
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, "http://"+addr, "tokengate_extauthz_jwks_keys") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("extauthz did not load the refresher's keys:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond) // start-up polling only
	}
	return addr
}

var placeholder = regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)\}`)

// startNginx renders examples/nginx/tokengate.conf the way envsubst does
// and runs nginx in the foreground. It returns the base URL and the Host
// the upstream receives ($host: without the port).
func startNginx(t *testing.T, bin, authz string, ref replica, app *recordingApp) (string, string) {
	t.Helper()
	return startNginxOn(t, bin, proctest.FreePort(t), authz, ref, app)
}

// startNginxOn is startNginx on a port chosen beforehand (for services
// that must know nginx's public origin when they start).
func startNginxOn(t *testing.T, bin string, port int, authz string, ref replica, app *recordingApp) (string, string) {
	t.Helper()
	prefix := t.TempDir()
	// nginx's workers run as an unprivileged user when the master is root.
	for _, d := range []string{filepath.Dir(prefix), prefix} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "www"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{
		"TOKENGATE_EXTAUTHZ":  authz,
		"TOKENGATE_REFRESHER": strings.TrimPrefix(ref.URL, "http://"),
		"APP_UPSTREAM":        app.addr,
		"LISTEN":              "127.0.0.1:" + strconv.Itoa(port),
		"STATIC_ROOT":         filepath.Join(prefix, "www"),
	}
	tmpl, err := os.ReadFile(filepath.Join(proctest.ModuleRoot(), "examples/nginx/tokengate.conf"))
	if err != nil {
		t.Fatal(err)
	}
	rendered := placeholder.ReplaceAllStringFunc(string(tmpl), func(m string) string {
		name := placeholder.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			t.Fatalf("examples/nginx/tokengate.conf: ${%s} has no value", name)
		}
		return v
	})
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(prefix, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tokengate.conf", rendered)
	write("www/index.html", "ok\n")
	write("nginx.conf", fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  include %[1]s/tokengate.conf;
}
`, prefix))
	p := proctest.Start(t, "nginx", nil, bin, "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"))
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	p.WaitHTTP(t, base+"/api/public/ready", http.StatusOK, 20*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Logf("--- nginx error.log ---\n%s", b)
		}
	})
	return base, "127.0.0.1"
}

// startCaddy runs Caddy with examples/caddy/Caddyfile, its placeholders
// given as environment variables. It returns the base URL and the Host
// the upstream receives (Caddy keeps the client's, port included).
func startCaddy(t *testing.T, bin, authz string, ref replica, app *recordingApp) (string, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := proctest.FreePort(t)
	hostPort := "127.0.0.1:" + strconv.Itoa(port)
	env := []string{
		"SITE_ADDRESS=http://" + hostPort,
		"TOKENGATE_EXTAUTHZ=" + authz,
		"TOKENGATE_REFRESHER=" + strings.TrimPrefix(ref.URL, "http://"),
		"APP_UPSTREAM=" + app.addr,
		"STATIC_ROOT=" + dir,
		"CADDY_ADMIN=off",
		// Caddy keeps state (autosave.json, certificates) under these.
		"HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_DATA_HOME=" + dir,
	}
	p := proctest.Start(t, "caddy", env, bin, "run", "--adapter", "caddyfile",
		"--config", filepath.Join(proctest.ModuleRoot(), "examples/caddy/Caddyfile"))
	base := "http://" + hostPort
	p.WaitHTTP(t, base+"/api/public/ready", http.StatusOK, 20*time.Second)
	return base, hostPort
}

// recordingApp is the upstream: it records every request by its
// X-Test-Case header and answers 200.
type recordingApp struct {
	addr string
	mu   sync.Mutex
	seen map[string][]upstreamRequest
}

type upstreamRequest struct {
	method, path, host, body, remote string
	header                           http.Header
}

func newRecordingApp(t *testing.T) *recordingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &recordingApp{addr: ln.Addr().String(), seen: map[string][]upstreamRequest{}}
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *recordingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h := r.Header.Clone()
	id := h.Get("X-Test-Case")
	for _, n := range []string{"X-Test-Case", "User-Agent", "Accept-Encoding", "Content-Length"} {
		h.Del(n)
	}
	a.mu.Lock()
	a.seen[id] = append(a.seen[id], upstreamRequest{method: r.Method, path: r.URL.RequestURI(), host: r.Host, body: string(b), remote: r.RemoteAddr, header: h})
	a.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok\n"))
}

// take returns and forgets what the app received for one test case.
func (a *recordingApp) take(id string) []upstreamRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.seen[id]
	delete(a.seen, id)
	return r
}
