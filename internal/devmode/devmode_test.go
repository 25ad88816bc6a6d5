package devmode_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/devmode"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

func TestIssuer(t *testing.T) {
	t.Parallel()
	for listen, want := range map[string]string{
		":8080": "http://localhost:8080", "127.0.0.1:9000": "http://localhost:9000",
		":0": "http://localhost", "nonsense": "http://localhost",
	} {
		if got := devmode.Issuer(listen); got != want {
			t.Errorf("Issuer(%q) = %q, want %q", listen, got, want)
		}
	}
	// extauthz --dev trusts the issuer of a refresher on its default address.
	if got, want := devmode.DefaultIssuer(), devmode.Issuer(refresher.RunDefaults().Listen); got != want {
		t.Errorf("DefaultIssuer() = %q, want %q", got, want)
	}
}

func TestBoltDir(t *testing.T) {
	t.Parallel()
	for uri, want := range map[string]string{
		"bolt://x/tokengate.db": "x", "bolt://tokengate.db": ".", "bolt://": "", "memory://": "", "redis://h:6379": "",
	} {
		if got := devmode.BoltDir(uri); got != want {
			t.Errorf("BoltDir(%q) = %q, want %q", uri, got, want)
		}
	}
}

// The admin token and signing key are created once (0600) and kept, so a
// restart keeps tokens valid and the printed admin token usable.
func TestStateKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tok, path, err := devmode.AdminToken(dir)
	if err != nil || len(tok) < 40 || path != filepath.Join(dir, "admin-token") {
		t.Fatalf("AdminToken: %q %q %v", tok, path, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", fi, err)
	}
	if again, _, err := devmode.AdminToken(dir); err != nil || again != tok {
		t.Fatalf("second AdminToken = %q %v, want the first", again, err)
	}
	k1, kp, created, err := devmode.SigningKeys(dir, jwa.ES256())
	if err != nil || !created || kp != filepath.Join(dir, "signing-key.json") {
		t.Fatalf("SigningKeys: %q %v %v", kp, created, err)
	}
	k2, _, created, err := devmode.SigningKeys(dir, jwa.ES256())
	if err != nil || created || k2.SignerKID() != k1.SignerKID() {
		t.Fatalf("second SigningKeys: created=%v kid %s vs %s %v", created, k2.SignerKID(), k1.SignerKID(), err)
	}
	// Without a bolt directory the key lives in memory only.
	if _, kp, _, err := devmode.SigningKeys("", jwa.ES256()); err != nil || kp != "" {
		t.Fatalf("in-memory SigningKeys: %q %v", kp, err)
	}
}

// The sample token of extauthz --dev passes a Check against the JWKS it
// is trusted with, for the dev issuer and audience.
func TestExtauthzKeyToken(t *testing.T) {
	old := devmode.ExtauthzKeyPath
	devmode.ExtauthzKeyPath = filepath.Join(t.TempDir(), "k.json")
	t.Cleanup(func() { devmode.ExtauthzKeyPath = old })
	dev, err := devmode.NewExtauthzKey(devmode.DefaultIssuer(), devmode.Audience)
	if err != nil || !dev.Created {
		t.Fatalf("NewExtauthzKey: %v %v", dev.Created, err)
	}
	cfg := extauthz.Config{Providers: []extauthz.Provider{{Issuer: devmode.DefaultIssuer(), Audiences: []string{devmode.Audience}, JWKS: dev.JWKS}}}
	srv, err := extauthz.NewServer(cfg, extauthz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"authorization": "Bearer " + dev.Token}},
	}}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("dev token refused: %v %v", resp, err)
	}
	var out bytes.Buffer
	devmode.PrintExtauthz(&out, dev.Token, addr("127.0.0.1:1"), addr("127.0.0.1:2"))
	if !bytes.Contains(out.Bytes(), []byte("export TOKEN="+dev.Token)) {
		t.Fatalf("walkthrough lacks the token:\n%s", out.String())
	}
}

// StoreDenylist answers from the store: revoked as soon as the session is.
func TestStoreDenylist(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memstore.New()
	now := time.Now()
	if err := st.CreateSession(ctx, store.Session{ID: "s1", Subject: "u", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(time.Hour)},
		store.Token{Hash: "h1", SessionID: "s1", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	d := devmode.StoreDenylist{Store: st}
	if !d.Ready() || d.Revoked("s1") || d.Revoked("unknown") {
		t.Fatalf("before revocation: ready=%v revoked=%v", d.Ready(), d.Revoked("s1"))
	}
	if _, err := st.RevokeSession(ctx, "s1", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !d.Revoked("s1") {
		t.Fatal("a revoked session was not reported")
	}
}

type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
