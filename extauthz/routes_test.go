package extauthz

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Forward-auth requests skip the mux only when the mux would have handed
// them to forward-auth unchanged: unclean paths are still redirected to
// their clean form, and other paths still get the mux's answers.
func TestRoutesForwardAuthShortCut(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "routes")
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
	tok := k.token(t, claimsAt(h.clock.Now()))
	routes := h.srv.Routes()
	mux := routes.(forwardFirst).mux // the reference: every request through the mux
	for _, tc := range []struct {
		method, target string
		allow          bool // a clean forward-auth path: allowed with the token's identity
	}{
		{"GET", "/authz/api/orders/42", true},
		{"GET", "/authz/api/orders/42?expand=items", true},
		{"POST", "/authz/api/", true},
		{"GET", "/authz", true},
		{"GET", "/authz/", true},
		{"GET", "/authz//api/orders", false},
		{"GET", "/authz/api/./orders", false},
		{"GET", "/authz/api/../../healthz", false},
		{"GET", "/authz/api/..", false},
		{"GET", "/authz/.", false},
		{"GET", "/authzx", false},
		{"GET", "/healthz", false},
		{"CONNECT", "/authz/api", true},
	} {
		answer := func(hd http.Handler) *httptest.ResponseRecorder {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			hd.ServeHTTP(w, r)
			return w
		}
		got, want := answer(routes), answer(mux)
		if got.Code != want.Code || got.Header().Get("Location") != want.Header().Get("Location") ||
			got.Header().Get("X-User-Id") != want.Header().Get("X-User-Id") || got.Body.String() != want.Body.String() {
			t.Errorf("%s %s: %d Location %q X-User-Id %q, the mux alone: %d %q %q", tc.method, tc.target,
				got.Code, got.Header().Get("Location"), got.Header().Get("X-User-Id"),
				want.Code, want.Header().Get("Location"), want.Header().Get("X-User-Id"))
		}
		if allowed := got.Code == http.StatusOK && got.Header().Get("X-User-Id") != ""; allowed != tc.allow {
			t.Errorf("%s %s: %d %v, want a forward-auth allow: %v", tc.method, tc.target, got.Code, got.Header(), tc.allow)
		}
	}
}
