package extauthz

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startGRPC serves h's server on a loopback port and returns a client conn.
func startGRPC(t *testing.T, h *harness) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	h.srv.RegisterGRPC(gs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Check and Health over real loopback gRPC; after Shutdown
// health is NOT_SERVING while checks still get answers.
func TestGRPCCheckHealthShutdown(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k))
	conn := startGRPC(t, h)
	authz := authv3.NewAuthorizationClient(conn)
	health := healthpb.NewHealthClient(conn)
	ctx := t.Context()

	resp, err := authz.Check(ctx, bearerReq(k.token(t, claimsAt(h.clock.Now()))))
	if err != nil {
		t.Fatal(err)
	}
	if a := flatten(t, resp); !a.allowed || a.set["x-user-id"] != "user-1" {
		t.Fatalf("answer %+v", a)
	}
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		hr, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health(%q) = %v, %v", svc, hr, err)
		}
	}
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "other"}); grpcCode(err) != "NotFound" {
		t.Fatalf("unknown service: %v", err)
	}
	h.srv.Shutdown()
	hr, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after Shutdown = %v, %v", hr, err)
	}
	if _, err := authz.Check(ctx, bearerReq(k.token(t, claimsAt(h.clock.Now())))); err != nil {
		t.Fatalf("check while draining: %v", err)
	}
}

// A deny over HTTP has the same status, headers and body as over gRPC.
func TestForwardAuthMatchesGRPC(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	h := newHarness(t, cfg)
	web := httptest.NewServer(h.srv.Routes())
	t.Cleanup(web.Close)
	bad := newTestKey(t, "ES256", "attacker").tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": "es-1"}, claimsAt(h.clock.Now()))

	g := h.check(t, checkReq("GET", "app.test", "/x", map[string]string{"authorization": "Bearer " + bad, "origin": "https://app.test"}))
	req, _ := http.NewRequest("GET", web.URL+"/authz/x", nil)
	req.Header.Set("Authorization", "Bearer "+bad)
	req.Header.Set("Origin", "https://app.test")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var hb map[string]string
	json.Unmarshal(body, &hb)
	if resp.StatusCode != g.status {
		t.Fatalf("status http %d grpc %d", resp.StatusCode, g.status)
	}
	if diff := cmp.Diff(g.body, hb); diff != "" {
		t.Fatalf("body (-grpc +http):\n%s", diff)
	}
	for name, v := range g.set {
		if got := resp.Header.Get(name); got != v {
			t.Errorf("%s: http %q grpc %q", name, got, v)
		}
	}
}

func TestReadyzAndHealthz(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	failing := newFailingJWKS(t)
	cfg := baseConfig(t, k)
	cfg.Providers = append(cfg.Providers, Provider{Name: "down", Issuer: "https://down.test", Audiences: []string{"a"}, JWKSURL: failing.URL})
	h := newHarness(t, cfg)
	web := httptest.NewServer(h.srv.Routes())
	t.Cleanup(web.Close)
	get := func(path string) (int, string) {
		resp, err := testClient.Get(web.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	code, body := get("/readyz")
	if code != 503 || !strings.Contains(body, "provider down: keys not loaded") {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "tokengate_extauthz_cache_hits_total 0") {
		t.Fatalf("metrics %d", code)
	}
}

// Reload swaps atomically; a bad config is refused and the old one stays.
func TestReload(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	h := newHarness(t, baseConfig(t, k1))
	t1 := k1.token(t, claimsAt(h.clock.Now()))
	t2 := k2.token(t, claimsAt(h.clock.Now()))

	bad := baseConfig(t, k2)
	bad.Routes = []Route{{Action: "sometimes"}}
	err := h.srv.Reload(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "routes[0].action") {
		t.Fatalf("bad config: %v", err)
	}
	if got := h.check(t, bearerReq(t1)).reason(); got != "allow" {
		t.Fatalf("old config after refused reload: %s", got)
	}
	// Keys that never load refuse the reload too.
	unreachable := urlConfig(newFailingJWKS(t).URL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.srv.Reload(ctx, unreachable); err == nil {
		t.Fatal("a config whose keys never load was accepted")
	}
	if got := h.check(t, bearerReq(t1)).reason(); got != "allow" {
		t.Fatalf("old config after unreachable reload: %s", got)
	}
	if err := h.srv.Reload(context.Background(), baseConfig(t, k2)); err != nil {
		t.Fatal(err)
	}
	if got := h.check(t, bearerReq(t2)).reason(); got != "allow" {
		t.Fatalf("new key after reload: %s", got)
	}
	if got := h.check(t, bearerReq(t1)).reason(); got != "invalid_token" {
		t.Fatalf("old key after reload: %s", got)
	}
}

// Metrics go to the passed-in registry; logs never hold the token.
func TestMetricsAndLogs(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k))
	good := k.token(t, claimsAt(h.clock.Now()))
	expired := k.token(t, with(claimsAt(h.clock.Now()), "exp", h.clock.Now().Add(-time.Hour).Unix()))
	h.check(t, bearerReq(good))
	h.check(t, bearerReq(expired))
	h.check(t, bearerReq(expired))
	h.check(t, checkReq("GET", "a", "/?access_token="+good, nil))

	if v := counterValue(t, h.srv.metrics.checks.WithLabelValues("allow", "verified")); v != 1 {
		t.Errorf("allow/verified %v", v)
	}
	if v := counterValue(t, h.srv.metrics.checks.WithLabelValues("deny", "token_expired")); v != 2 {
		t.Errorf("deny/token_expired %v", v)
	}
	if v := counterValue(t, h.srv.metrics.checks.WithLabelValues("deny", "missing_token")); v != 1 {
		t.Errorf("deny/missing_token %v", v)
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"tokengate_extauthz_checks_total", "tokengate_extauthz_check_duration_seconds", "tokengate_extauthz_jwks_keys", "tokengate_extauthz_cache_misses_total"} {
		if !names[n] {
			t.Errorf("metric %s not on the registry", n)
		}
	}
	logs := h.logs.String()
	sig := good[strings.LastIndexByte(good, '.')+1:]
	for _, secret := range []string{good, expired, sig, good[:40]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain a token")
		}
	}
	for _, want := range []string{`"reason":"token_expired"`, `"sub":"user-1"`, `"sid":"sess-1"`, `"jti":"jti-1"`, `"kid":"es-1"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// blockingDenylist holds a check inside Revoked until released, so a test
// can act while a check is in flight.
type blockingDenylist struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingDenylist) Revoked(string) bool {
	b.entered <- struct{}{}
	<-b.release
	return false
}

func (b *blockingDenylist) Ready() bool { return true }

// A reload while a check is in flight: the check finishes on the
// configuration it started with; the next one uses the new one.
func TestReloadKeepsInFlightCheck(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	dl := &blockingDenylist{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHarness(t, baseConfig(t, k1), func(o *Options) { o.Denylist = dl })
	tok := k1.token(t, claimsAt(h.clock.Now()))
	done := make(chan answer, 1)
	go func() {
		resp, err := h.srv.Check(context.Background(), bearerReq(tok))
		if err != nil {
			t.Error(err)
			close(done)
			return
		}
		done <- flatten(t, resp)
	}()
	<-dl.entered
	if err := h.srv.Reload(context.Background(), baseConfig(t, k2)); err != nil {
		t.Fatal(err)
	}
	close(dl.release)
	if a := <-done; a.reason() != "allow" || a.set["x-user-id"] != "user-1" {
		t.Fatalf("in-flight check after reload: %+v", a)
	}
	if got := h.check(t, bearerReq(tok)).reason(); got != "invalid_token" {
		t.Fatalf("next check with the old key: %s", got)
	}
}

// Health Watch streams the status and its change at shutdown.
func TestGRPCHealthWatch(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k))
	conn := startGRPC(t, h)
	stream, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first %v %v", first, err)
	}
	h.srv.Shutdown()
	next, err := stream.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after Shutdown %v %v", next, err)
	}
}

// HS256 from hmac_secret_file (trailing newline ignored).
func TestHMACSecretFile(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("z", 48)
	path := t.TempDir() + "/hmac"
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Providers: []Provider{{Issuer: testIssuer, Audiences: []string{testAudience}, HMACSecretFile: path}}}
	h := newHarness(t, cfg)
	c := claimsAt(h.clock.Now())
	tok := signRaw(t, "HS256", []byte(secret), map[string]any{"alg": "HS256", "typ": "JWT"}, []byte(mustJSON(t, c)))
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatalf("HS256 from file: %s", got)
	}
	wrong := signRaw(t, "HS256", []byte(strings.Repeat("y", 48)), map[string]any{"alg": "HS256"}, []byte(mustJSON(t, c)))
	if got := h.check(t, bearerReq(wrong)).reason(); got != "invalid_token" {
		t.Fatalf("HS256 with another secret: %s", got)
	}
	// An ES256 token is refused: this provider has no public keys at all.
	if got := h.check(t, bearerReq(newTestKey(t, "ES256", "es-1").token(t, c))).reason(); got != "invalid_token" {
		t.Fatalf("ES256 on an HMAC-only provider: %s", got)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := NewServer(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "at least 32 bytes") {
		t.Fatalf("short secret file: %v", err)
	}
}
