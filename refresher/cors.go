package refresher

import (
	"net/http"
	"strings"
)

// cors answers browsers calling the token endpoints from an allowed origin
// with credentials (the refresh cookie). Origins are matched exactly;
// anything else gets no CORS headers, so the browser refuses the response.
type cors struct {
	allowed map[string]bool
}

func newCORS(origins []string) *cors {
	c := &cors{allowed: map[string]bool{}}
	for _, o := range origins {
		c.allowed[strings.TrimSuffix(o, "/")] = true
	}
	return c
}

// wrap adds CORS headers to h's answers and answers preflights itself.
func (c *cors) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		ok := origin != "" && c.allowed[origin]
		if ok {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Access-Control-Expose-Headers", "Retry-After, DPoP-Nonce")
		}
		if r.Method == http.MethodOptions {
			if !ok {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			w.Header().Add("Vary", "Access-Control-Request-Method")
			w.Header().Add("Vary", "Access-Control-Request-Headers")
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization, DPoP")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkCookieRequest guards every request the refresh cookie authenticates
// (refresh and sign-out) against cross-site request forgery. SameSite=Strict
// alone does not: a sibling subdomain, or another port of the same host, is
// the same site, so the browser sends the cookie with a form it posts. The
// request is accepted when
//   - its Origin is one of the allowed CORS origins (exact match); or
//   - the browser says the page is the refresher's own origin
//     (Sec-Fetch-Site: same-origin, which page scripts cannot set): the
//     refresher behind the app's host, as in the nginx example; or
//   - it has neither Origin nor Sec-Fetch-Site: not a browser (curl, a
//     server), so no victim's cookie is involved. Every browser that can be
//     made to send the cookie sends one of them on a cross-origin POST.
//
// Anything else — a foreign or "null" Origin, Sec-Fetch-Site same-site,
// cross-site or none without an allowed Origin — is refused. A non-simple
// request (JSON, extra headers) from another origin is covered too: its
// preflight fails unless the origin is allowed, and it carries Origin.
func (c *cors) checkCookieRequest(r *http.Request) error {
	origins := r.Header.Values("Origin")
	site := r.Header.Get("Sec-Fetch-Site")
	switch {
	case len(origins) > 1:
		return crossOrigin("Origin: given more than once")
	case len(origins) == 1 && c.allowed[origins[0]]:
		return nil
	case site == "same-origin":
		return nil
	case len(origins) == 0 && site == "":
		return nil
	case len(origins) == 1:
		return crossOrigin("Origin: %q may not use the %s cookie (not an allowed CORS origin)", origins[0], CookieName)
	}
	return crossOrigin("Origin: required with the %s cookie from a cross-origin page (Sec-Fetch-Site: %s)", CookieName, site)
}
