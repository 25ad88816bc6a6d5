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
			w.Header().Set("Access-Control-Expose-Headers", "Retry-After")
		}
		if r.Method == http.MethodOptions {
			if !ok {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			w.Header().Add("Vary", "Access-Control-Request-Method")
			w.Header().Add("Vary", "Access-Control-Request-Headers")
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}
