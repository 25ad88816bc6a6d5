package extauthz

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Routes is the HTTP side: forward-auth under /authz/ (any method),
// /healthz, /readyz and /metrics.
func (s *Server) Routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/authz", refuseBody(s.handleForwardAuth))
	mux.Handle("/authz/", refuseBody(s.handleForwardAuth))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	if s.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	return mux
}

func (s *Server) handleForwardAuth(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := s.state.Load()
	in := fromForwardAuth(r)
	out := st.decide(r.Context(), &in)
	s.observe(&in, &out, start)
	st.writeHTTP(w, &out)
}

// fromForwardAuth recovers the original request. The proxy MUST set (not
// pass through) the headers it is read from, or a client could choose the
// route policy applied to it:
//   - nginx auth_request: X-Original-URI, X-Original-Method (and Host or X-Forwarded-Host);
//   - Traefik forwardAuth, Caddy forward_auth: X-Forwarded-Uri, X-Forwarded-Method, X-Forwarded-Host;
//   - Envoy HTTP ext_authz (path_prefix: /authz): the original path follows
//     the prefix and the method and Host are the original ones.
func fromForwardAuth(r *http.Request) request {
	in := request{method: r.Method, host: r.Host, headers: make(map[string]string, len(decisionHeaders))}
	for _, n := range decisionHeaders {
		vs := r.Header[n.canonical]
		switch {
		case len(vs) == 1:
			in.headers[n.lower] = vs[0]
		case len(vs) > 1:
			sep := ","
			if n.lower == "cookie" {
				sep = "; "
			}
			in.headers[n.lower] = strings.Join(vs, sep)
		}
	}
	in.path = strings.TrimPrefix(r.URL.RequestURI(), "/authz")
	if in.path == "" || in.path[0] != '/' {
		in.path = "/" + in.path
	}
	// Canonical names looked up directly: Header.Get would canonicalise
	// (and allocate for X-Original-URI) on every request.
	if u := firstValue(r.Header, "X-Original-Uri"); u != "" {
		in.path = u
		if m := firstValue(r.Header, "X-Original-Method"); m != "" {
			in.method = m
		}
	}
	if u := firstValue(r.Header, "X-Forwarded-Uri"); u != "" {
		in.path = u
	}
	if m := firstValue(r.Header, "X-Forwarded-Method"); m != "" {
		in.method = m
	}
	if h := firstValue(r.Header, "X-Forwarded-Host"); h != "" {
		in.host = h
	}
	in.method = strings.ToUpper(in.method)
	return in
}

// firstValue is Header.Get for a name already in canonical form.
func firstValue(h http.Header, canonical string) string {
	if vs := h[canonical]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// decisionHeaders are the request headers a decision reads (request.header
// callers: the token finder, the preflight test and CORS). Forward-auth
// copies only these: the proxy forwards all of the client's headers, and
// copying every one into a new map was most of fromForwardAuth's cost.
// net/http has already canonicalised the names in r.Header.
var decisionHeaders = [...]struct{ lower, canonical string }{
	{"authorization", "Authorization"},
	{"cookie", "Cookie"},
	{"origin", "Origin"},
	{"access-control-request-method", "Access-Control-Request-Method"},
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	st := s.state.Load()
	var notReady []string
	for _, p := range st.providers {
		if !p.ready() {
			notReady = append(notReady, "provider "+p.name+": keys not loaded")
		}
	}
	if st.denylist != nil && !st.denylist.Ready() {
		notReady = append(notReady, "revocation feed not ready")
	}
	if s.stopping.Load() {
		notReady = append(notReady, "shutting down")
	}
	if len(notReady) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reasons": notReady})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// writeJSON encodes into a buffer first, so an answer is never half-written.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("content-type", "application/json")
	w.Header().Set("cache-control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
