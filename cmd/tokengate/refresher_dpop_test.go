package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
