package refresher_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// The metadata document: absolute URLs on the issuer (its trailing slash
// dropped for the endpoints, kept in issuer), the signing algorithm, and
// the JWKS's Cache-Control.
func TestMetadataDocument(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.Issuer = "https://auth.test/" }))
	r := rg.do(rg.request("GET", "/.well-known/openid-configuration", "", ""))
	if r.Status != http.StatusOK {
		t.Fatalf("status %d %s", r.Status, r.Raw)
	}
	if got, want := r.Header.Get("Cache-Control"), "public, max-age=300"; got != want {
		t.Errorf("Cache-Control %q, want %q", got, want)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.Raw), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                     "https://auth.test/",
		"jwks_uri":                                   "https://auth.test/.well-known/jwks.json",
		"token_endpoint":                             "https://auth.test/v1/token",
		"revocation_endpoint":                        "https://auth.test/v1/revoke",
		"grant_types_supported":                      []any{"refresh_token"},
		"response_types_supported":                   []any{},
		"token_endpoint_auth_methods_supported":      []any{"none"},
		"revocation_endpoint_auth_methods_supported": []any{"none"},
		"id_token_signing_alg_values_supported":      []any{"ES256"},
		// RFC 9449 §5.1: DPoP is optional by default.
		"dpop_signing_alg_values_supported": []any{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("document (-want +got):\n%s", d)
	}
}

// Contract: extauthz with discovery: true, given only this refresher's
// issuer, finds its keys through the metadata and verifies its tokens.
func TestDiscoveryContract(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	clock := fakeclock.New()
	cfg := testConfig()
	cfg.Issuer = issuer
	keys := generateKeys(t)
	srv, err := refresher.NewServer(cfg, refresher.Options{Store: memstore.New(), Keys: keys, Clock: clock.Now,
		Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Routes())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	rg := &rig{t: t, srv: srv, http: hs, clock: clock, keys: keys, client: hs.Client()}
	access := rg.startSession("").str("access_token")

	ez, err := extauthz.NewServer(extauthz.Config{Providers: []extauthz.Provider{{
		Name: "refresher", Issuer: issuer, Audiences: cfg.Audience, Discovery: true,
	}}}, extauthz.Options{Clock: clock.Now, FetchBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ez.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ez.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := ez.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "api.test", Path: "/api/me",
			Headers: map[string]string{"authorization": "Bearer " + access},
		}},
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.GetStatus().GetCode(); code != 0 {
		t.Fatalf("the refresher's token was refused: code %d %v", code, resp.GetDeniedResponse())
	}
}
