package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/proctest"
)

// DPoP and network binding through the shipped nginx and Caddy examples,
// in front of a real extauthz process: the proof's htu is built from what
// each proxy forwards, a use_dpop_nonce denial's DPoP-Nonce reaches the
// client (nginx's auth_request passes only WWW-Authenticate by itself),
// and bind_network sees the client address each proxy sets (nginx
// X-Real-IP, Caddy the right-most X-Forwarded-For entry), never one the
// client sent.
func TestDPoPThroughShippedProxies(t *testing.T) {
	app := newRecordingApp(t)
	signer := newTokenSigner(t)
	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			t.Parallel()
			bin := proctest.RequireBinary(t, proxy, "apt-get install -y "+proxy)
			// The proxies need a refresher upstream to start; nothing here calls it.
			ref := replica{Name: "none", URL: "http://127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))}
			authz, pinOrigin := startDPoPExtauthz(t, proxy, signer)
			var base, origin string
			switch proxy {
			case "nginx":
				// nginx forwards Host $host, which drops a non-default
				// port: such a deployment pins the origin of htu.
				base, _ = startNginx(t, bin, authz, ref, app)
				pinOrigin(base)
			case "caddy":
				// Caddy forwards the Host with its port: htu is built from
				// X-Forwarded-Proto and -Host.
				base, _ = startCaddy(t, bin, authz, ref, app)
			}
			origin = base
			key := dpoptest.NewKey(t, "ES256")
			get := func(path, tok, nonce string, extra map[string]string) *http.Response {
				t.Helper()
				req, err := http.NewRequest("GET", base+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				opts := []dpoptest.Opt{dpoptest.WithATH(tok)}
				if nonce != "" {
					opts = append(opts, dpoptest.WithNonce(nonce))
				}
				req.Header.Set("Authorization", "DPoP "+tok)
				req.Header.Set("DPoP", key.Proof("GET", origin+path, opts...))
				for n, v := range extra {
					req.Header.Set(n, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp
			}
			tok := signer.token(t, map[string]any{"jkt": key.JKT(), "ip": "127.0.0.1"})

			// No nonce yet: 401 use_dpop_nonce, with the nonce to use.
			resp := get("/api/things", tok, "", nil)
			nonce := resp.Header.Get("DPoP-Nonce")
			if resp.StatusCode != http.StatusUnauthorized || nonce == "" ||
				!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
				t.Fatalf("without a nonce: %d, DPoP-Nonce %q, WWW-Authenticate %q", resp.StatusCode, nonce, resp.Header.Get("WWW-Authenticate"))
			}
			// With it: through to the app.
			if resp = get("/api/things", tok, nonce, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("with the nonce: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			// The token as Bearer (copied out of the page): refused.
			req, _ := http.NewRequest("GET", base+"/api/things", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusUnauthorized ||
				!strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_dpop_proof"`) {
				t.Fatalf("as Bearer: %v %v", r, err)
			}
			// bind_network: the proxy's view of the client (127.0.0.1),
			// whatever X-Forwarded-For / X-Real-IP the client sends.
			spoof := map[string]string{"X-Forwarded-For": "192.0.2.1", "X-Real-IP": "192.0.2.1"}
			if resp = get("/api/bound/x", tok, nonce, spoof); resp.StatusCode != http.StatusOK {
				t.Fatalf("bound route from the token's address: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			elsewhere := signer.token(t, map[string]any{"jkt": key.JKT(), "ip": "192.0.2.1"})
			resp = get("/api/bound/x", elsewhere, nonce, spoof)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `reason="token_unbound"`) {
				t.Fatalf("bound route, token of another address with spoofed headers: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// startDPoPExtauthz runs extauthz (forward-auth for proxy) trusting
// signer's key, with DPoP nonces on and a bind_network route. pinOrigin
// rewrites its config with dpop.external_origin and reloads it (SIGHUP).
func startDPoPExtauthz(t *testing.T, proxy string, signer *tokenSigner) (addr string, pinOrigin func(string)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "extauthz.yaml")
	write := func(origin string) {
		cfg := fmt.Sprintf(`providers:
  - issuer: %s
    audiences: [%s]
    jwks: %s
routes:
  - {path_prefix: /api/public/, action: public}
  - {path_prefix: /api/bound/, action: required, bind_network: {ipv4_prefix: 32}}
forward_auth:
  proxy: %s
dpop:
  nonce: {enabled: true}
`, signer.issuer, audience, signer.jwks, proxy)
		if origin != "" {
			cfg += "  external_origin: " + origin + "\n"
		}
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	addr = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	p := proctest.Start(t, "extauthz-dpop-"+proxy, nil, proctest.Tokengate(t), "extauthz", "--config", path,
		"--http-listen", addr, "--grpc-listen", "127.0.0.1:"+strconv.Itoa(proctest.FreePort(t)), "--log-level", "info")
	p.WaitHTTP(t, "http://"+addr+"/readyz", http.StatusOK, 20*time.Second)
	return addr, func(origin string) {
		t.Helper()
		write(origin)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(p.Output(), "config reloaded") {
			if time.Now().After(deadline) {
				t.Fatalf("extauthz did not reload:\n%s", p.Output())
			}
			time.Sleep(20 * time.Millisecond) // process-level polling only
		}
	}
}

// tokenSigner signs access tokens with an ES256 key of its own (extauthz
// trusts its JWKS inline): tokens with any cnf, without a refresher.
type tokenSigner struct {
	priv   *ecdsa.PrivateKey
	issuer string
	jwks   string
}

func newTokenSigner(t *testing.T) *tokenSigner {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"e2e","alg":"ES256","use":"sig","x":"%s","y":"%s"}]}`,
		b64url(pad32(priv.X)), b64url(pad32(priv.Y)))
	return &tokenSigner{priv: priv, issuer: "https://dpop.e2e.test", jwks: jwks}
}

func (s *tokenSigner) token(t *testing.T, cnf map[string]any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"iss": s.issuer, "aud": audience, "sub": "alice", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "cnf": cnf}
	hb, _ := json.Marshal(map[string]any{"alg": "ES256", "kid": "e2e", "typ": "at+jwt"})
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64url(hb) + "." + b64url(cb)
	d := sha256.Sum256([]byte(input))
	r, sig, err := ecdsa.Sign(rand.Reader, s.priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64url(append(pad32(r), pad32(sig)...))
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func pad32(n *big.Int) []byte {
	out := make([]byte, 32)
	n.FillBytes(out)
	return out
}
