package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/devmode"
	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/proctest"
)

// eaFixture is a signing key, its JWKS file and a config file in a temp dir.
type eaFixture struct {
	dir, jwksPath, configPath string
	keys                      *keyset.Keys
}

func newEAFixture(t *testing.T) *eaFixture {
	t.Helper()
	f := &eaFixture{dir: t.TempDir()}
	var err error
	f.keys, _, err = keyset.LoadOrCreate(filepath.Join(f.dir, "key.json"), jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := f.keys.PublicJSON()
	if err != nil {
		t.Fatal(err)
	}
	f.jwksPath = filepath.Join(f.dir, "jwks.json")
	f.configPath = filepath.Join(f.dir, "extauthz.yaml")
	if err := os.WriteFile(f.jwksPath, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	f.writeConfig(t, "api")
	return f
}

func (f *eaFixture) writeConfig(t *testing.T, audience string) {
	t.Helper()
	cfg := fmt.Sprintf(`providers:
  - issuer: https://issuer.test
    audiences: [%s]
    jwks_file: %s
routes:
  - {path_prefix: /public/, action: public}
cors:
  allowed_origins: [https://app.test]
`, audience, f.jwksPath)
	if err := os.WriteFile(f.configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *eaFixture) token(t *testing.T, audience string) string {
	t.Helper()
	tok, err := devmode.SignToken(f.keys, "https://issuer.test", audience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func eaCheck(t *testing.T, c authv3.AuthorizationClient, path, token string) *authv3.CheckResponse {
	t.Helper()
	h := map[string]string{"x-user-id": "spoofed"}
	if token != "" {
		h["authorization"] = "Bearer " + token
	}
	resp, err := c.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.test", Path: path, Headers: h},
	}}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// eaWaitOutput waits for a line in the process's logs: the event a signal
// handler reports, not a timing guess.
func eaWaitOutput(t *testing.T, p *proctest.Process, substr string, count int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(p.Output(), substr) < count {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output:\n%s", substr, p.Output())
		}
		select {
		case <-p.Done():
			t.Fatalf("process exited:\n%s", p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestExtauthzProcess runs `tokengate extauthz` as a process and talks to
// it over real loopback gRPC and HTTP: checks, health, forward-auth,
// metrics, SIGHUP reload (bad config refused, good one applied) and a
// graceful SIGTERM.
func TestExtauthzProcess(t *testing.T) {
	t.Parallel()
	bin := proctest.Tokengate(t)
	f := newEAFixture(t)
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	p := proctest.Start(t, "extauthz", []string{"TOKENGATE_HTTP_LISTEN=" + httpAddr}, bin,
		"extauthz", "--config", f.configPath, "--grpc-listen", grpcAddr, "--log-level", "debug")
	p.WaitHTTP(t, "http://"+httpAddr+"/readyz", 200, 30*time.Second)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authz := authv3.NewAuthorizationClient(conn)
	tok := f.token(t, "api")

	// Allow: identity set, spoofed copy overwritten.
	ok := eaCheck(t, authz, "/api/x", tok).GetOkResponse()
	if ok == nil {
		t.Fatal("valid token denied")
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if got["x-user-id"] != "dev-user" || got["x-user-name"] != "Dev User" {
		t.Fatalf("identity headers %v", got)
	}
	// Deny: 401 JSON.
	d := eaCheck(t, authz, "/api/x", "").GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != 401 || !strings.Contains(d.GetBody(), `"missing_token"`) {
		t.Fatalf("missing token: %v", d)
	}
	// Public route: allowed, spoofed identity removed.
	if ok := eaCheck(t, authz, "/public/a", "").GetOkResponse(); ok == nil || !slices.Contains(ok.GetHeadersToRemove(), "x-user-id") {
		t.Fatalf("public: %v", ok)
	}
	hr, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", hr, err)
	}
	if _, err := eaReflectionServices(conn); err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Fatalf("reflection without --grpc-reflection: %v", err)
	}

	// HTTP forward-auth: the same decisions.
	status, hdr, body := eaHTTP(t, "http://"+httpAddr+"/authz/api/x", map[string]string{"Authorization": "Bearer " + tok})
	if status != 200 || hdr.Get("X-User-Id") != "dev-user" {
		t.Fatalf("forward-auth allow: %d %v %s", status, hdr, body)
	}
	status, hdr, body = eaHTTP(t, "http://"+httpAddr+"/authz/api/x", map[string]string{"Origin": "https://app.test"})
	if status != 401 || hdr.Get("Access-Control-Allow-Origin") != "https://app.test" || !strings.Contains(body, "missing_token") {
		t.Fatalf("forward-auth deny: %d %v %s", status, hdr, body)
	}
	if _, _, body := eaHTTP(t, "http://"+httpAddr+"/metrics", nil); !strings.Contains(body, `tokengate_extauthz_checks_total{decision="allow",reason="verified"} 2`) {
		t.Fatalf("metrics:\n%s", body)
	}

	// SIGHUP with a broken file: refused, the running config stays.
	if err := os.WriteFile(f.configPath, []byte("providers: [{issuer: x, audiences: [a], jwks_file: /nope}]\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eaWaitOutput(t, p, "config reload refused", 1)
	if eaCheck(t, authz, "/api/x", tok).GetOkResponse() == nil {
		t.Fatal("old config lost after a refused reload")
	}
	// SIGHUP with a good file: the new audience applies.
	f.writeConfig(t, "api2")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eaWaitOutput(t, p, `"msg":"config reloaded"`, 1)
	if eaCheck(t, authz, "/api/x", tok).GetOkResponse() != nil {
		t.Fatal("token for the old audience still allowed after reload")
	}
	if eaCheck(t, authz, "/api/x", f.token(t, "api2")).GetOkResponse() == nil {
		t.Fatal("token for the new audience denied after reload")
	}

	// SIGTERM: a clean exit after draining.
	if err := p.Stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Output())
	}
	if !strings.Contains(p.Output(), "health NOT_SERVING") {
		t.Fatalf("no shutdown log:\n%s", p.Output())
	}
	for _, secret := range []string{tok, tok[strings.LastIndexByte(tok, '.')+1:]} {
		if strings.Contains(p.Output(), secret) {
			t.Fatal("the logs contain a token")
		}
	}
}

func eaHTTP(t *testing.T, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// A provider whose keys never load: /readyz 503, Check UNAVAILABLE.
func TestExtauthzProcessUnavailable(t *testing.T) {
	t.Parallel()
	bin := proctest.Tokengate(t)
	f := newEAFixture(t)
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	dead := fmt.Sprintf("http://127.0.0.1:%d/jwks.json", proctest.FreePort(t))
	p := proctest.Start(t, "extauthz", nil, bin, "extauthz", "--jwks-url", dead, "--issuer", "https://issuer.test",
		"--audience", "api", "--grpc-listen", grpcAddr, "--http-listen", httpAddr, "--grpc-reflection")
	p.WaitHTTP(t, "http://"+httpAddr+"/readyz", 503, 30*time.Second)
	// Without --config a SIGHUP is ignored, not fatal.
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eaWaitOutput(t, p, "SIGHUP ignored", 1)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"authorization": "Bearer " + f.token(t, "api")}},
	}}})
	if err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("Check error %v, want Unavailable", err)
	}
	services, err := eaReflectionServices(conn)
	if err != nil || !slices.Contains(services, "envoy.service.auth.v3.Authorization") || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Fatalf("reflection with --grpc-reflection: %v %v", services, err)
	}
}

// eaReflectionServices lists the services gRPC reflection reports.
func eaReflectionServices(conn *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()
	// Send reports io.EOF when the server has already ended the stream (as
	// it does for an unimplemented service); the status comes from Recv.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestExtauthzFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no provider", nil, "providers: at least one provider is required"},
		{"shortcut incomplete", []string{"--jwks-url", "http://x/jwks"}, "providers[0].issuer: is required"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"dev with a key source", []string{"--dev", "--jwks-url", "http://x"}, "--dev brings its own key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"extauthz"}, tc.args...), func(string) string { return "" }, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestValidateConfigCommand(t *testing.T) {
	t.Parallel()
	f := newEAFixture(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"validate-config", f.configPath}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatalf("valid file: %v\n%s", err, out.String())
	}
	if !strings.HasSuffix(out.String(), ": ok\n") {
		t.Fatalf("output %q", out.String())
	}
	bad := filepath.Join(f.dir, "bad.yaml")
	os.WriteFile(bad, []byte("providers:\n- issuer: x\n  audiences: []\n  jwks_url: ftp://x\n"), 0o600)
	out.Reset()
	err := run(context.Background(), []string{"validate-config", bad}, os.Getenv, &out, io.Discard)
	if err == nil {
		t.Fatal("invalid file accepted")
	}
	want := bad + ": providers[0].audiences: at least one audience is required\n" +
		bad + `: providers[0].jwks_url: must be an http or https URL, not "ftp://x"` + "\n"
	if out.String() != want {
		t.Fatalf("output\n%s\nwant\n%s", out.String(), want)
	}
	if err := run(context.Background(), []string{"validate-config"}, os.Getenv, io.Discard, io.Discard); err == nil {
		t.Fatal("no file accepted")
	}
}

// --dev: a key under ./.tokengate (here a temp dir), trusted inline, and a
// sample token that passes Check.
func TestExtauthzDevToken(t *testing.T) {
	dir := t.TempDir()
	old := devmode.ExtauthzKeyPath
	devmode.ExtauthzKeyPath = filepath.Join(dir, ".tokengate", "extauthz-dev-key.json")
	t.Cleanup(func() { devmode.ExtauthzKeyPath = old })
	f := extauthzFlags{dev: true}
	dev, err := f.setUpDev()
	if err != nil {
		t.Fatal(err)
	}
	tok := dev.Token
	cfg, err := f.loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Providers[0].JWKS) == 0 || cfg.Providers[0].Issuer != devmode.DefaultIssuer() {
		t.Fatalf("dev config %+v", cfg.Providers[0])
	}
	srv, err := extauthz.NewServer(cfg, extauthz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"authorization": "Bearer " + tok}},
	}}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("dev token: %v %v", resp, err)
	}
	// A restart reuses the key, so earlier tokens stay valid.
	before, _ := os.ReadFile(devmode.ExtauthzKeyPath)
	f2 := extauthzFlags{dev: true}
	if _, err := f2.setUpDev(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(devmode.ExtauthzKeyPath)
	if !bytes.Equal(before, after) {
		t.Fatal("the dev key was regenerated")
	}
	var w bytes.Buffer
	devmode.PrintExtauthz(&w, tok, fakeAddr("127.0.0.1:9001"), fakeAddr("127.0.0.1:9002"))
	for _, want := range []string{"export TOKEN=" + tok, "curl -i -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:9002/authz/hello", "grpcurl -plaintext"} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("walkthrough lacks %q", want)
		}
	}
	var claims map[string]any
	parts := strings.Split(tok, ".")
	b, _ := decodeB64(parts[1])
	json.Unmarshal(b, &claims)
	if claims["aud"] != devmode.Audience {
		t.Fatalf("dev token aud %v", claims["aud"])
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

func decodeB64(s string) ([]byte, error) { return base64RawURL.DecodeString(s) }

var base64RawURL = base64.RawURLEncoding

// `tokengate refresher --dev` and `tokengate extauthz --dev` default to
// the same issuer and audience (internal/devmode), so a dev token of one
// is accepted by the other.
func TestDevDefaultsAgree(t *testing.T) {
	old := devmode.ExtauthzKeyPath
	devmode.ExtauthzKeyPath = filepath.Join(t.TempDir(), "extauthz-dev-key.json")
	t.Cleanup(func() { devmode.ExtauthzKeyPath = old })
	var rf refresherFlags
	rf.register(flag.NewFlagSet("refresher", flag.ContinueOnError))
	rf.dev, rf.store, rf.adminToken = true, "memory://", "0123456789abcdef0123"
	s, err := rf.build(context.Background(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer s.opts.Store.Close()
	var ef extauthzFlags
	ef.register(flag.NewFlagSet("extauthz", flag.ContinueOnError))
	ef.dev = true
	if _, err := ef.setUpDev(); err != nil {
		t.Fatal(err)
	}
	if s.cfg.Issuer != ef.issuer || len(s.cfg.Audience) != 1 || s.cfg.Audience[0] != ef.audience || ef.audience != devmode.Audience {
		t.Fatalf("refresher --dev iss %q aud %q; extauthz --dev iss %q aud %q", s.cfg.Issuer, s.cfg.Audience, ef.issuer, ef.audience)
	}
}
