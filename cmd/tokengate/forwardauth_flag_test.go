package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --forward-auth-proxy sets forward_auth.proxy, and refuses to contradict
// the config file.
func TestForwardAuthProxyFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	provider := "providers: [{issuer: https://i.test, audiences: [a], jwks_file: /nonexistent}]\n"
	plain := write("plain.yaml", provider)
	nginx := write("nginx.yaml", provider+"forward_auth: {proxy: nginx}\n")
	for _, tc := range []struct {
		config, flag, want, err string
	}{
		{config: plain, want: ""}, // the default (envoy) is applied by extauthz
		{config: plain, flag: "traefik", want: "traefik"},
		{config: nginx, want: "nginx"},
		{config: nginx, flag: "nginx", want: "nginx"},
		{config: nginx, flag: "caddy", err: "--forward-auth-proxy caddy contradicts forward_auth.proxy nginx"},
		{config: plain, flag: "haproxy", err: "forward_auth.proxy: must be envoy, nginx, traefik or caddy"},
	} {
		f := extauthzFlags{config: tc.config, forwardAuthProxy: tc.flag}
		cfg, err := f.loadConfig()
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s --forward-auth-proxy %q: %v, want %q", filepath.Base(tc.config), tc.flag, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s --forward-auth-proxy %q: %v", filepath.Base(tc.config), tc.flag, err)
		case cfg.ForwardAuth.Proxy != tc.want:
			t.Errorf("%s --forward-auth-proxy %q: proxy %q, want %q", filepath.Base(tc.config), tc.flag, cfg.ForwardAuth.Proxy, tc.want)
		}
	}
}
