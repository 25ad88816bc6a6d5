package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
)

// denialsFixture is the committed record of what extauthz answers for each
// refusal. The TypeScript client's tests (examples/client/test/harness.ts)
// build their fake API's 401/403/503 answers from it, so the client is tested
// against the answers this package really gives.
const denialsFixture = "../examples/client/test/fixtures/denials.json"

var updateDenials = flag.Bool("update", false, "rewrite "+denialsFixture+" from the current responses")

// fixtureDenial is one reason's answer, the same over gRPC Check (its
// denied_response) and HTTP forward-auth.
type fixtureDenial struct {
	// Status is the HTTP status the browser gets.
	Status int `json:"status"`
	// GRPCCode is the status of the gRPC Check: UNAUTHENTICATED or
	// PERMISSION_DENIED with a denied_response, or UNAVAILABLE (an error,
	// no response; Envoy's status_on_error answers, forward-auth sends 503).
	GRPCCode string `json:"grpc_code"`
	// Headers are every header of the answer (lower-case names), without
	// date and content-length.
	Headers map[string]string `json:"headers"`
	// Body is the JSON body.
	Body json.RawMessage `json:"body"`
}

type denialsFile struct {
	Comment string                   `json:"_comment"`
	Realm   string                   `json:"realm"`
	Denials map[Reason]fixtureDenial `json:"denials"`
}

// denialCase makes extauthz refuse one request for one reason.
type denialCase struct {
	reason Reason
	path   string // of the original request; "" is /api/things
	cfg    func(*Config)
	opts   func(*Options)
	token  func(k *testKey, now time.Time) string // "" sends no token
	// ext are the gRPC request's context_extensions; forward are extra
	// headers of the forward-auth request (the app selector's equivalents).
	ext     map[string]string
	forward map[string]string
	// headers, when set, are the request's headers instead of a Bearer
	// token (a DPoP token and its proof).
	headers func(k *testKey, now time.Time) map[string]string
}

func denialCases(t *testing.T) []denialCase {
	other := newTestKey(t, "ES256", "es-other")
	revoked := &fakeDenylist{revoked: map[string]bool{"sess-1": true}, ready: true}
	unsynced := &fakeDenylist{revoked: map[string]bool{}, ready: false}
	valid := func(k *testKey, now time.Time) string { return k.token(t, claimsAt(now)) }
	return []denialCase{
		{reason: ReasonMissingToken},
		{reason: ReasonTokenExpired, token: func(k *testKey, now time.Time) string {
			return k.token(t, with(claimsAt(now), "exp", now.Add(-time.Hour).Unix()))
		}},
		// Signed by a key the provider does not trust, under a trusted kid.
		{reason: ReasonInvalidToken, token: func(k *testKey, now time.Time) string {
			return other.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": k.kid, "typ": "at+jwt"}, claimsAt(now))
		}},
		{reason: ReasonTokenRevoked, token: valid, opts: func(o *Options) { o.Denylist = revoked }},
		{reason: ReasonInsufficientScope, token: valid, path: "/admin/things", cfg: func(c *Config) {
			c.Routes = []Route{{PathPrefix: "/admin/", Action: ActionRequired, ScopesAll: []string{"admin"}}}
		}},
		{reason: ReasonUnavailable, token: valid, cfg: func(c *Config) {
			c.Providers[0].JWKS = nil
			c.Providers[0].JWKSURL = newFailingJWKS(t).URL
		}},
		{reason: ReasonRevocationsUnavailable, token: valid, opts: func(o *Options) { o.Denylist = unsynced }},
		// An app selector naming no app: a context extension over gRPC,
		// forward_auth.app_header over HTTP (set by nginx).
		{reason: ReasonUnknownApp, token: valid, cfg: func(c *Config) {
			c.Apps = []App{{Name: "web", Match: AppMatch{ContextExtensions: map[string]string{"app": "web"}}}}
			c.ForwardAuth = ForwardAuthConfig{Proxy: ProxyNginx, AppHeader: "x-tokengate-app"}
		}, ext: map[string]string{"app": "nope"}, forward: map[string]string{
			"x-original-uri": "/api/things", "x-original-method": "GET", "x-tokengate-app": "nope",
		}},
		// A DPoP-bound token sent as Bearer.
		{reason: ReasonInvalidDPoPProof, token: func(k *testKey, now time.Time) string {
			return k.token(t, with(claimsAt(now), "cnf", map[string]any{"jkt": strings.Repeat("A", 43)}))
		}},
		// A proof without the server's nonce (its value is random: "NONCE" in the fixture).
		{reason: ReasonUseDPoPNonce, cfg: func(c *Config) {
			c.DPoP.Nonce.Enabled = true
		}, headers: func(k *testKey, now time.Time) map[string]string {
			key := dpoptest.NewKey(t, "ES256")
			tok := k.token(t, with(claimsAt(now), "cnf", map[string]any{"jkt": key.JKT()}))
			return map[string]string{"authorization": "DPoP " + tok,
				"dpop": key.Proof("GET", "https://app.test/api/things", dpoptest.WithATH(tok), dpoptest.WithIAT(now))}
		}, forward: map[string]string{"x-forwarded-proto": "https"}},
		// A route bound to a device; the token carries no cnf.dev.
		{reason: ReasonTokenUnbound, token: valid, cfg: func(c *Config) {
			c.Routes = []Route{{PathPrefix: "/api/", Action: ActionRequired, BindDevice: &BindDevice{Header: "x-device-id"}}}
		}},
	}
}

// TestDenialsFixture renders every refusal through the real response code,
// over gRPC Check and over forward-auth, checks that both say the same, and
// compares the result with the committed fixture. When extauthz's answers
// change, this fails until the fixture is rewritten (go test ./extauthz
// -run TestDenialsFixture -update) and the client's tests pass against it.
func TestDenialsFixture(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	got := denialsFile{
		Comment: "Generated by extauthz/denials_fixture_test.go: go test ./extauthz -run TestDenialsFixture -update. " +
			"What extauthz answers for each refusal, over gRPC Check and HTTP forward-auth alike. " +
			"The client's tests build their fake API's answers from this file.",
		Realm:   "tokengate",
		Denials: map[Reason]fixtureDenial{},
	}
	for _, c := range denialCases(t) {
		cfg := baseConfig(t, k)
		if c.cfg != nil {
			c.cfg(&cfg)
		}
		var mods []func(*Options)
		if c.opts != nil {
			mods = append(mods, c.opts)
		}
		h := newHarness(t, cfg, mods...)
		path := c.path
		if path == "" {
			path = "/api/things"
		}
		headers := map[string]string{}
		if c.token != nil {
			headers["authorization"] = "Bearer " + c.token(k, h.clock.Now())
		}
		if c.headers != nil {
			headers = c.headers(k, h.clock.Now())
		}
		req := checkReq("GET", "app.test", path, headers)
		req.Attributes.ContextExtensions = c.ext
		overGRPC := grpcDenial(t, h, req)
		for name, v := range c.forward {
			headers[name] = v
		}
		overHTTP := forwardAuthDenial(t, h, path, headers)
		overHTTP.GRPCCode = overGRPC.GRPCCode
		for _, d := range []*fixtureDenial{&overGRPC, &overHTTP} {
			if _, ok := d.Headers["dpop-nonce"]; ok {
				d.Headers["dpop-nonce"] = "NONCE" // random
			}
		}
		// A denied_response: forward-auth must give the very same answer.
		if overGRPC.Headers != nil {
			if diff := cmp.Diff(overGRPC, overHTTP); diff != "" {
				t.Errorf("%s: gRPC and forward-auth answers differ (-grpc +forward-auth):\n%s", c.reason, diff)
			}
		}
		if overHTTP.Status != c.reason.HTTPStatus() {
			t.Errorf("%s: status %d, want %d (Reason.HTTPStatus)", c.reason, overHTTP.Status, c.reason.HTTPStatus())
		}
		if _, dup := got.Denials[c.reason]; dup {
			t.Fatalf("two cases for %s", c.reason)
		}
		got.Denials[c.reason] = overHTTP
	}
	checkEveryReasonCovered(t, got.Denials)

	want, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *updateDenials {
		if err := os.WriteFile(denialsFixture, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	committed, err := os.ReadFile(denialsFixture)
	if err != nil {
		t.Fatalf("%v (create it with go test ./extauthz -run TestDenialsFixture -update)", err)
	}
	if !bytes.Equal(committed, want) {
		t.Errorf("%s no longer matches extauthz's answers: rewrite it with go test ./extauthz -run TestDenialsFixture -update, "+
			"then make the client's tests (examples/client, npm test) pass against it (-committed +now):\n%s",
			denialsFixture, cmp.Diff(strings.Split(string(committed), "\n"), strings.Split(string(want), "\n")))
	}
}

// grpcDenial is the gRPC Check's answer: a denied_response, or only the
// code for an UNAVAILABLE error.
func grpcDenial(t *testing.T, h *harness, req *authv3.CheckRequest) fixtureDenial {
	t.Helper()
	resp, err := h.srv.Check(context.Background(), req)
	if err != nil {
		// google.rpc.Code and grpc codes share their numbers.
		return fixtureDenial{GRPCCode: code.Code(status.Code(err)).String()}
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("Check allowed the request: %v", resp)
	}
	out := fixtureDenial{
		Status:   int(d.GetStatus().GetCode()),
		GRPCCode: code.Code(resp.GetStatus().GetCode()).String(),
		Headers:  map[string]string{},
		Body:     compactJSON(t, []byte(d.GetBody())),
	}
	for _, hv := range d.GetHeaders() {
		name := hv.GetHeader().GetKey()
		if _, dup := out.Headers[name]; dup {
			t.Errorf("denied_response sets %s twice", name)
		}
		out.Headers[name] = hv.GetHeader().GetValue()
	}
	return out
}

// forwardAuthDenial is the HTTP forward-auth answer for the same request
// (Envoy's HTTP mode, the default convention: the path after /authz).
func forwardAuthDenial(t *testing.T, h *harness, path string, headers map[string]string) fixtureDenial {
	t.Helper()
	r := httptest.NewRequest("GET", "/authz"+path, nil)
	r.Host = "app.test"
	for name, v := range headers {
		r.Header.Set(name, v)
	}
	w := httptest.NewRecorder()
	h.srv.Routes().ServeHTTP(w, r)
	out := fixtureDenial{Status: w.Code, Headers: map[string]string{}, Body: compactJSON(t, w.Body.Bytes())}
	for name, vs := range w.Header() {
		if len(vs) != 1 {
			t.Errorf("forward-auth answer has %d values of %s", len(vs), name)
		}
		out.Headers[strings.ToLower(name)] = vs[0]
	}
	if n := out.Headers["content-length"]; n != "" && n != strconv.Itoa(w.Body.Len()) {
		t.Errorf("content-length %s for a body of %d bytes", n, w.Body.Len())
	}
	delete(out.Headers, "content-length")
	delete(out.Headers, "date")
	return out
}

// compactJSON checks that b is one JSON value followed by a newline, as
// every answer's body is, and returns it without the newline.
func compactJSON(t *testing.T, b []byte) json.RawMessage {
	t.Helper()
	if !json.Valid(b) || !bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("body %q is not a JSON value ending in a newline", b)
	}
	return json.RawMessage(bytes.TrimSuffix(b, []byte("\n")))
}

// checkEveryReasonCovered reads the Reason constants of errors.go: each is
// an allow reason or has an entry in the fixture, so a new denial reason
// cannot be added without the client's tests seeing its answer.
func checkEveryReasonCovered(t *testing.T, denials map[Reason]fixtureDenial) {
	t.Helper()
	allows := []Reason{ReasonVerified, ReasonAnonymous, ReasonPreflight}
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, decl := range f.Decls {
		g, ok := decl.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					continue
				}
				r, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				found++
				if _, ok := denials[Reason(r)]; !ok && !slices.Contains(allows, Reason(r)) {
					t.Errorf("reason %s (errors.go) is neither an allow reason nor in the denials fixture: add a case to denialCases", r)
				}
			}
		}
	}
	if found < len(denials)+len(allows) {
		t.Fatalf("found %d Reason constants in errors.go, fewer than the %d known: the parsing no longer matches the file", found, len(denials)+len(allows))
	}
}
