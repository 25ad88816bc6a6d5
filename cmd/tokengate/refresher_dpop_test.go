package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/refresher"
)

// The DPoP flags' problems are reported together, each naming its flag.
func TestRefresherDPoPFlagErrors(t *testing.T) {
	t.Parallel()
	short := filepath.Join(t.TempDir(), "nonce-secret")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"refresher", "--store", "memory://", "--dpop", "sometimes",
		"--dpop-algorithms", "ES256,HS256", "--dpop-max-age", "-1s", "--dpop-nonce", "--dpop-nonce-secret-file", short,
		"--dpop-nonce-lifetime", "-1m", "--dpop-replay-cache-bytes", "-5", "--dpop-signin-urls", "https://app.test/login,ftp://x",
		"--external-url", "https://app.test/auth?x=1"},
		func(string) string { return "" }, io.Discard, &stderr)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v; want a usage error", err)
	}
	for _, want := range []string{"dpop: must be off, optional or required", "dpop-algorithms[1]:", "dpop-max-age:",
		"dpop-nonce-secret-file: must be at least 32 bytes", "dpop-nonce-lifetime:", "dpop-replay-cache-bytes:",
		"dpop-signin-urls[1]:", "external-url:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	err = run(context.Background(), []string{"refresher", "--store", "memory://", "--dpop-nonce-secret-file", "/nonexistent/secret"},
		func(string) string { return "" }, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "dpop-nonce-secret-file:") {
		t.Fatalf("missing secret file: err = %v", err)
	}
}

// The DPoP flags reach the refresher: a nonce secret read from its file
// (whitespace trimmed), the lists split, and the served metadata lists the
// configured algorithms.
func TestRefresherDPoPFlagsApplied(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "nonce-secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("k", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("refresher", flag.ContinueOnError)
	var f refresherFlags
	f.register(fs)
	err := fs.Parse([]string{"--dev", "--store", "memory://", "--admin-token", "0123456789abcdef0123",
		"--dpop", "required", "--dpop-algorithms", "ES256, EdDSA", "--dpop-nonce", "--dpop-nonce-secret-file", secret,
		"--dpop-signin-urls", "https://app.test/login,https://app.test/sso", "--external-url", "https://app.test/auth",
		"--bind-network"})
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(io.Discard, "error")
	reg, _ := newRegistry()
	s, err := f.build(context.Background(), log, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.opts.Store.Close()
	c := s.cfg
	if c.DPoP != refresher.DPoPRequired || !c.DPoPNonce || string(c.DPoPNonceSecret) != strings.Repeat("k", 40) ||
		strings.Join(c.DPoPAlgorithms, "|") != "ES256|EdDSA" || len(c.DPoPSigninURLs) != 2 ||
		c.ExternalURL != "https://app.test/auth" || !c.BindNetwork {
		t.Fatalf("config = %+v", c)
	}
	srv, err := refresher.NewServer(c, s.opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Routes().ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/openid-configuration", nil))
	if !strings.Contains(rec.Body.String(), `"dpop_signing_alg_values_supported":["ES256","EdDSA"]`) {
		t.Errorf("metadata = %s", rec.Body.String())
	}
}
