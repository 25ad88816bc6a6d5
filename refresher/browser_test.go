package refresher_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/refresher"
)

func cookieOf(t *testing.T, r response) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == refresher.CookieName {
			return c
		}
	}
	return nil
}

func TestCookieTransport(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.RefreshTokenTransport = refresher.TransportCookie }))
	first := rg.startSession("")
	c := cookieOf(t, first)
	if c == nil {
		t.Fatalf("POST /v1/sessions set no cookie: %v", first.Header)
	}
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/v1/token" || c.Value != first.str("refresh_token") {
		t.Errorf("cookie = %+v; want HttpOnly, Secure, SameSite=Strict, Path=/v1/token, the refresh token", c)
	}

	// The browser sends only the cookie; the answer's body carries no refresh token.
	req := rg.request("POST", "/v1/token", "", "")
	req.AddCookie(&http.Cookie{Name: refresher.CookieName, Value: c.Value})
	got := rg.do(req)
	if got.Status != http.StatusOK || got.str("access_token") == "" {
		t.Fatalf("cookie refresh = %d %s", got.Status, got.Raw)
	}
	if _, ok := got.Body["refresh_token"]; ok {
		t.Error("cookie transport leaked the refresh token into the body")
	}
	next := cookieOf(t, got)
	if next == nil || next.Value == c.Value || !strings.HasPrefix(next.Value, "tgr1_") {
		t.Fatalf("refresh did not set the rotated cookie: %+v", next)
	}

	// A body token is refused when the body transport is off.
	if r := rg.refresh(next.Value); r.Status != http.StatusBadRequest || r.str("error") != "invalid_request" {
		t.Errorf("body token with cookie transport = %d %s", r.Status, r.Raw)
	}

	// Sign-out under the cookie's path revokes the session and clears the cookie.
	out := rg.request("POST", "/v1/token/revoke", "", "")
	out.AddCookie(&http.Cookie{Name: refresher.CookieName, Value: next.Value})
	r := rg.do(out)
	if r.Status != http.StatusOK {
		t.Fatalf("cookie revoke = %d %s", r.Status, r.Raw)
	}
	if cl := cookieOf(t, r); cl == nil || cl.MaxAge >= 0 {
		t.Errorf("revoke did not clear the cookie: %+v", cl)
	}
	if rg.session(first.str("session_id")).RevokedAt.IsZero() {
		t.Error("cookie revoke did not revoke the session")
	}
}

// Behind a proxy that mounts the refresher under a prefix, the cookie's
// Path follows the browser's view.
func TestCookiePath(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) {
		c.RefreshTokenTransport, c.CookiePath = refresher.TransportCookie, "/auth/v1/token"
	}))
	if c := cookieOf(t, rg.startSession("")); c == nil || c.Path != "/auth/v1/token" {
		t.Fatalf("cookie = %+v; want Path=/auth/v1/token", c)
	}
}

func TestBothTransports(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.RefreshTokenTransport = refresher.TransportBoth }))
	tok := rg.startSession("").str("refresh_token")
	got := rg.refresh(tok)
	if got.Status != http.StatusOK || got.str("refresh_token") == "" || cookieOf(t, got) == nil {
		t.Fatalf("both: %d body token %q cookie %v", got.Status, got.str("refresh_token"), cookieOf(t, got))
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.CORSAllowedOrigins = []string{"https://app.example"} }))
	tests := []struct {
		name, method, path, origin string
		wantStatus                 int
		wantAllow                  string
	}{
		{"preflight allowed", "OPTIONS", "/v1/token", "https://app.example", http.StatusNoContent, "https://app.example"},
		{"preflight revoke allowed", "OPTIONS", "/v1/revoke", "https://app.example", http.StatusNoContent, "https://app.example"},
		{"preflight other origin", "OPTIONS", "/v1/token", "https://evil.example", http.StatusForbidden, ""},
		{"request allowed", "POST", "/v1/token", "https://app.example", http.StatusBadRequest, "https://app.example"},
		{"request other origin", "POST", "/v1/token", "https://evil.example", http.StatusBadRequest, ""},
		{"admin endpoint never CORS", "OPTIONS", "/v1/sessions", "https://app.example", http.StatusMethodNotAllowed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := rg.request(tc.method, tc.path, "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=x",
				"Origin", tc.origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
			r := rg.do(req)
			if r.Status != tc.wantStatus {
				t.Errorf("status = %d, want %d", r.Status, tc.wantStatus)
			}
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != tc.wantAllow {
				t.Errorf("Allow-Origin = %q, want %q", got, tc.wantAllow)
			}
			if tc.wantAllow != "" && r.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Error("no Allow-Credentials")
			}
			if tc.method == "OPTIONS" && tc.wantAllow != "" && !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Content-Type") {
				t.Errorf("Allow-Headers = %q", r.Header.Get("Access-Control-Allow-Headers"))
			}
		})
	}
}

// A request authenticated by the refresh cookie must come from an allowed
// origin: the cookie is SameSite=Strict, which a sibling subdomain (or
// another port of the same host) still gets sent by the browser. A form or
// fetch from a foreign origin is refused with 403 before anything is read
// or written: no rotation, no sign-out, the cookie left as it is.
func TestCookieCSRF(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	tests := []struct {
		name, path string
		header     []string
		want       int
	}{
		{"refresh: allowed Origin", "/v1/token", []string{"Origin", app, "Sec-Fetch-Site", "same-site"}, 200},
		{"refresh: same-origin page (Sec-Fetch-Site)", "/v1/token", []string{"Origin", "https://auth.example", "Sec-Fetch-Site", "same-origin"}, 200},
		{"refresh: no Origin, no Sec-Fetch-Site (not a browser)", "/v1/token", nil, 200},
		{"refresh: foreign Origin", "/v1/token", []string{"Origin", "https://evil.example"}, 403},
		{"refresh: sibling subdomain", "/v1/token", []string{"Origin", "https://evil.app.example", "Sec-Fetch-Site", "same-site"}, 403},
		{"refresh: allowed origin with a trailing slash is another string", "/v1/token", []string{"Origin", app + "/"}, 403},
		{"refresh: Origin null", "/v1/token", []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}, 403},
		{"refresh: no Origin, same-site", "/v1/token", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"refresh: no Origin, cross-site", "/v1/token", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"refresh: no Origin, user-initiated", "/v1/token", []string{"Sec-Fetch-Site", "none"}, 403},
		{"sign-out: allowed Origin", "/v1/token/revoke", []string{"Origin", app}, 200},
		{"sign-out: foreign Origin", "/v1/token/revoke", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "same-site"}, 403},
		{"sign-out: no Origin, cross-site", "/v1/token/revoke", []string{"Sec-Fetch-Site", "cross-site"}, 403},
	}
	for _, transport := range []refresher.Transport{refresher.TransportCookie, refresher.TransportBoth} {
		t.Run(string(transport), func(t *testing.T) {
			t.Parallel()
			rg := newRig(t, withConfig(func(c *refresher.Config) {
				c.RefreshTokenTransport, c.CORSAllowedOrigins = transport, []string{app}
			}))
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					first := rg.startSession("")
					sid := first.str("session_id")
					// A simple form post, as an attacker's page can send it.
					req := rg.request("POST", tc.path, "application/x-www-form-urlencoded", "grant_type=refresh_token", tc.header...)
					req.AddCookie(&http.Cookie{Name: refresher.CookieName, Value: cookieOf(t, first).Value})
					got := rg.do(req)
					if got.Status != tc.want {
						t.Fatalf("= %d %s %q; want %d", got.Status, got.str("error"), got.str("error_description"), tc.want)
					}
					if tc.want != http.StatusForbidden {
						return
					}
					if got.str("error") != "invalid_request" || !strings.HasPrefix(got.str("error_description"), "Origin: ") {
						t.Errorf("refusal = %s; want invalid_request naming Origin", got.Raw)
					}
					if c := cookieOf(t, got); c != nil {
						t.Errorf("the refusal touched the cookie: %+v", c)
					}
					if s := rg.session(sid); !s.RevokedAt.IsZero() || s.Generation != 0 {
						t.Errorf("session after the refusal: revoked %v, generation %d; want untouched", !s.RevokedAt.IsZero(), s.Generation)
					}
				})
			}
		})
	}
	// With both transports a body token is its own proof (an attacker who
	// knows it needs no CSRF): the Origin rule is for the cookie.
	rg := newRig(t, withConfig(func(c *refresher.Config) { c.RefreshTokenTransport = refresher.TransportBoth }))
	tok := rg.startSession("").str("refresh_token")
	r := rg.do(rg.request("POST", "/v1/token", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token="+tok,
		"Origin", "https://other.example"))
	if r.Status != http.StatusOK {
		t.Errorf("body token from another origin = %d %s; want 200", r.Status, r.Raw)
	}
}
