package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
)

// TestNetworkBindingThroughNginx: real refresher (network binding on),
// real extauthz and real nginx rendered from examples/nginx/tokengate.conf.
// Clients connect from different loopback source addresses, so nginx's
// $remote_addr — the only address extauthz and the refresher believe —
// really differs. A token minted for 127.0.0.2 is refused from 127.0.0.3
// with token_unbound (forged X-Real-IP / X-Forwarded-For change nothing);
// the holder refreshes once from 127.0.0.3 and the new token works there;
// someone with only an access token stays refused.
func TestNetworkBindingThroughNginx(t *testing.T) {
	bin := proctest.RequireBinary(t, "nginx", "apt-get install -y nginx")
	redis := proctest.StartRedis(t)
	ref := startRefresher(t, "refresher", redis.Addr, signingKey(t),
		"--bind-network", "--client-ip-header", "X-Forwarded-For")
	authz := startExtauthzConfig(t, "extauthz", refresherProvider(ref)+`routes:
  - {path_prefix: /api/public/, action: public}
  - {path_prefix: /api/wide/, action: required, bind_network: {ipv4_prefix: 24}}
  - {path_prefix: /api/, action: required, bind_network: {ipv4_prefix: 32}}
forward_auth:
  proxy: nginx
`)
	app := newRecordingApp(t)
	base, _ := startNginx(t, bin, authz, ref, app)

	const home, away, elsewhere = "127.0.0.2", "127.0.0.3", "127.1.0.9"
	// The login backend passes the address the browser signed in from.
	s := signIn(t, ref, "roaming", map[string]any{"client_ip": home})
	tok0 := s.AccessToken
	if ip := cnfOf(t, tok0)["ip"]; ip != home {
		t.Fatalf("cnf.ip of the sign-in token = %v, want %s", ip, home)
	}

	get := func(id, from, token string, extra map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/api/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Test-Case", id)
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := clientFrom(t, from).Do(req)
		if err != nil {
			t.Fatalf("GET /api/%s from %s: %v", id, from, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	allowed := func(id, from, token string) {
		t.Helper()
		if st, www := get(id, from, token, nil); st != http.StatusOK {
			t.Fatalf("GET /api/%s from %s = %d %s, want 200", id, from, st, www)
		}
		seen := app.take(id)
		if len(seen) != 1 || seen[0].header.Get("X-User-Id") != "roaming" {
			t.Fatalf("the app saw %+v for %s, want one request as roaming", seen, id)
		}
	}
	unbound := func(id, from, token string, extra map[string]string) {
		t.Helper()
		st, www := get(id, from, token, extra)
		if st != http.StatusUnauthorized || !strings.Contains(www, "token_unbound") {
			t.Fatalf("GET /api/%s from %s with %v = %d %q, want 401 token_unbound", id, from, extra, st, www)
		}
		if seen := app.take(id); len(seen) != 0 {
			t.Fatalf("the app saw %d requests for %s, want none", len(seen), id)
		}
	}
	forged := func(ip string) map[string]string {
		return map[string]string{"X-Real-IP": ip, "X-Forwarded-For": ip, "Forwarded": "for=" + ip}
	}

	// First the attack the proxy must stop: a request from elsewhere naming
	// the bound address in its own forwarding headers. (Were nginx to pass
	// the client's X-Real-IP on to extauthz, this would be allowed.)
	unbound("away-forged-0", away, tok0, forged(home))
	allowed("home-1", home, tok0)
	// The laptop moves: the same token from another address.
	unbound("away-1", away, tok0, nil)
	unbound("away-forged-1", away, tok0, forged(home))
	// A prefix binding (/24) accepts a neighbour and refuses another network.
	allowed("wide/away", away, tok0)
	unbound("wide/elsewhere", elsewhere, tok0, nil)

	// The holder answers token_unbound with one refresh, from its new address.
	r1 := refreshFrom(t, base, away, s.RefreshToken)
	if r1.Status != http.StatusOK {
		t.Fatalf("refresh from %s: %v", away, r1)
	}
	tok1 := r1.Body.AccessToken
	if ip := cnfOf(t, tok1)["ip"]; ip != away {
		t.Fatalf("cnf.ip after the refresh from %s = %v", away, ip)
	}
	allowed("away-2", away, tok1)
	unbound("home-2", home, tok1, nil)

	// Someone holding only an access token (no refresh token) gets nowhere.
	unbound("thief-old", away, tok0, nil)
	unbound("thief-old-forged", elsewhere, tok0, forged(home))
	unbound("thief-new", elsewhere, tok1, forged(away))
}

// signIn is POST /v1/sessions with extra body fields (client_ip, device_id).
func signIn(t *testing.T, r replica, sub string, extra map[string]any) tokenResponse {
	t.Helper()
	in := map[string]any{"sub": sub, "claims": map[string]any{"name": "E2E " + sub, "roles": []string{"user"}}}
	for k, v := range extra {
		in[k] = v
	}
	body, _ := json.Marshal(in)
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/sessions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	a := do(req)
	if a.Err != nil || a.Status != http.StatusCreated || a.Body.RefreshToken == "" {
		t.Fatalf("POST %s/v1/sessions: %v", r.URL, a)
	}
	return a.Body
}

// clientFrom is an HTTP client whose connections leave from the loopback
// address ip (Linux routes all of 127.0.0.0/8 to lo), one connection per
// request.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
			DisableKeepAlives: true,
		},
	}
}

// refreshFrom is POST /v1/token through the proxy at base, from ip.
func refreshFrom(t *testing.T, base, ip, token string) answer {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return proctest.Do(clientFrom(t, ip), req)
}

// cnfOf decodes an access token's cnf claim (no verification: the test
// only reads what the refresher put there).
func cnfOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d segments", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Cnf map[string]any `json:"cnf"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cnf
}

// startExtauthzConfig starts `tokengate extauthz` with the YAML config cfg and
// returns its HTTP address once it is ready (its providers' keys loaded).
func startExtauthzConfig(t *testing.T, name, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "extauthz.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	p := proctest.Start(t, name, nil, proctest.Tokengate(t), "extauthz", "--config", path,
		"--http-listen", addr, "--grpc-listen", "127.0.0.1:"+strconv.Itoa(proctest.FreePort(t)), "--log-level", "warn")
	p.WaitHTTP(t, "http://"+addr+"/readyz", http.StatusOK, 20*time.Second)
	return addr
}

// TestDeviceBindingThroughNginx: a token of a session signed in with a
// device identifier is accepted on a bind_device route only with that
// identifier in the named cookie; the identifier itself never appears in
// the token (only its SHA-256).
func TestDeviceBindingThroughNginx(t *testing.T) {
	bin := proctest.RequireBinary(t, "nginx", "apt-get install -y nginx")
	redis := proctest.StartRedis(t)
	ref := startRefresher(t, "refresher", redis.Addr, signingKey(t))
	authz := startExtauthzConfig(t, "extauthz", refresherProvider(ref)+`routes:
  - {path_prefix: /api/public/, action: public}
  - {path_prefix: /api/, action: required, bind_device: {cookie: device_id}}
forward_auth:
  proxy: nginx
`)
	app := newRecordingApp(t)
	base, _ := startNginx(t, bin, authz, ref, app)

	const device = "laptop-7f3c9a61e2"
	s := signIn(t, ref, "device-user", map[string]any{"device_id": device})
	if strings.Contains(s.AccessToken, base64.RawURLEncoding.EncodeToString([]byte(device))) {
		t.Fatal("the access token carries the raw device identifier")
	}
	if dev, _ := cnfOf(t, s.AccessToken)["dev"].(string); dev == "" || strings.Contains(dev, device) {
		t.Fatalf("cnf.dev = %q, want the identifier's hash", dev)
	}
	for _, tc := range []struct {
		id, cookie string
		want       int
	}{
		{"device-right", "device_id=" + device, http.StatusOK},
		{"device-none", "", http.StatusUnauthorized},
		{"device-other", "device_id=laptop-other", http.StatusUnauthorized},
		{"device-other-name", "device=" + device, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/"+tc.id, nil)
		req.Header.Set("Authorization", "Bearer "+s.AccessToken)
		req.Header.Set("X-Test-Case", tc.id)
		if tc.cookie != "" {
			req.Header.Set("Cookie", tc.cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		www := resp.Header.Get("WWW-Authenticate")
		seen := len(app.take(tc.id))
		switch {
		case resp.StatusCode != tc.want:
			t.Errorf("%s: %d %q, want %d", tc.id, resp.StatusCode, www, tc.want)
		case tc.want == http.StatusUnauthorized && (!strings.Contains(www, "token_unbound") || seen != 0):
			t.Errorf("%s: %q, the app saw %d requests; want token_unbound and none", tc.id, www, seen)
		case tc.want == http.StatusOK && seen != 1:
			t.Errorf("%s: the app saw %d requests, want 1", tc.id, seen)
		}
	}
}
