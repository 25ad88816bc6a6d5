package extauthz

import (
	"encoding/json"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Routes is the HTTP side: forward-auth under /authz/ (any method),
// /healthz, /readyz and /metrics.
func (s *Server) Routes() http.Handler {
	forward := refuseBody(s.handleForwardAuth)
	mux := http.NewServeMux()
	mux.Handle("/authz", forward)
	mux.Handle("/authz/", forward)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	if s.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	return forwardFirst{forward: forward, mux: mux}
}

// forwardFirst sends a forward-auth request, the one every proxied request
// makes, straight to its handler; the mux's pattern matching cost about as
// much as the rest of a cached decision. Only a request the mux would hand
// to the same handler unchanged takes the short cut: a path under /authz/
// (or /authz itself) that is already clean, since the mux redirects an
// unclean one (//, /./, /../) to its cleaned form. Everything else, CONNECT
// and "*" included, goes through the mux as before.
type forwardFirst struct {
	forward http.Handler
	mux     *http.ServeMux
}

func (f forwardFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; (p == "/authz" || strings.HasPrefix(p, "/authz/")) &&
		r.Method != http.MethodConnect && cleanPath(p) == p {
		f.forward.ServeHTTP(w, r)
		return
	}
	f.mux.ServeHTTP(w, r)
}

// cleanPath is net/http's canonical form of a request path, the one the
// mux redirects to: path.Clean, keeping a trailing slash. It allocates only
// for a path that is not clean.
func cleanPath(p string) string {
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			return p
		}
		return np + "/"
	}
	return np
}

func (s *Server) handleForwardAuth(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := s.state.Load()
	in, bad := st.policy.forward.original(r)
	if bad != nil {
		// Not a decision: the proxy is misconfigured or bypassed.
		out := outcome{reason: ReasonForwardAuthHeaders, unavailable: bad}
		s.observe(&in, &out, start)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": bad.Error()})
		return
	}
	in.now = s.checkTime(st, start)
	ctx := r.Context()
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.startCheckSpan(ctx, propagation.HeaderCarrier(r.Header))
	}
	out := st.decide(ctx, &in)
	s.observe(&in, &out, start)
	if span != nil {
		endCheckSpan(span, &in, &out)
	}
	if out.reason == ReasonForwardAuthHeaders {
		// A header the decision needed (client address, scheme) is missing.
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": out.unavailable.Error()})
		return
	}
	st.writeHTTP(w, &out)
}

// ReasonForwardAuthHeaders is the error outcome of a forward-auth request
// that lacks (or repeats) a header its proxy convention requires: HTTP 400,
// checks_total{decision="error"}. The request is not judged at all.
const ReasonForwardAuthHeaders Reason = "forward_auth_headers"

// forwardAuth recovers the original request from a forward-auth request,
// by the convention of the one proxy the deployment names
// (forward_auth.proxy), chosen once at config load. Each convention reads
// only its own headers: a header of another family is never consulted, so a
// client cannot override what its proxy set by sending another proxy's
// header (the proxy passes unknown headers through). The proxy MUST set
// (overwrite) the headers its convention reads.
type forwardAuth struct {
	proxy  string // for error messages
	family headerFamily
	// appHeader is forward_auth.app_header, canonical ("" when not set):
	// part of the proxy's family, which the proxy must overwrite.
	appHeader string
	// extra are request headers copied besides decisionHeaders: the
	// routes' bind_device headers.
	extra []decisionHeader
}

// headerFamily is a proxy convention. (A small enum switched on per
// request: a func value would make the request escape to the heap.)
type headerFamily uint8

const (
	familyEnvoy      headerFamily = iota // the auth request itself
	familyNginx                          // X-Original-*
	familyXForwarded                     // X-Forwarded-* (Traefik, Caddy)
)

func newForwardAuth(proxy, appHeader string) forwardAuth {
	if appHeader != "" {
		appHeader = http.CanonicalHeaderKey(appHeader)
	}
	switch proxy {
	case ProxyNginx:
		return forwardAuth{proxy: proxy, family: familyNginx, appHeader: appHeader}
	case ProxyTraefik, ProxyCaddy:
		return forwardAuth{proxy: proxy, family: familyXForwarded, appHeader: appHeader}
	}
	return forwardAuth{proxy: ProxyEnvoy, family: familyEnvoy} // Envoy selects apps by context_extensions
}

// errForwardAuthHeaders: the auth request lacks a header its proxy must
// set (or, under envoy, carries another proxy's).
type errForwardAuthHeaders struct{ proxy, header string }

func (e *errForwardAuthHeaders) Error() string {
	if e.proxy == ProxyEnvoy {
		return "forward_auth.proxy is envoy, but the auth request carries " + e.header + ", another proxy's header: set forward_auth.proxy to nginx, traefik or caddy"
	}
	return "forward_auth.proxy is " + e.proxy + ": the auth request must carry exactly one " + e.header + " header, set by the proxy"
}

// original reads the request the proxy asks about. The headers a decision
// reads (token, Origin) are the client's own, forwarded by every proxy.
func (f forwardAuth) original(r *http.Request) (request, error) {
	in := request{forwarded: true}
	for i, n := range decisionHeaders {
		vs := r.Header[n.canonical]
		switch {
		case len(vs) == 1:
			in.fwd[i] = vs[0]
		case len(vs) > 1:
			in.fwd[i] = joinValues(n.lower, vs)
		}
	}
	if len(f.extra) > 0 {
		in.headers = make(map[string]string, len(f.extra))
		copyHeaders(r, &in, f.extra)
	}
	var missing string
	switch f.family {
	case familyNginx:
		missing = readNginx(r, &in)
	case familyXForwarded:
		missing = readXForwarded(r, &in)
	default:
		missing = readEnvoy(r, &in)
	}
	if missing == "" && f.appHeader != "" {
		missing = readApp(r, &in, f.appHeader)
	}
	if missing != "" {
		in.method, in.host, in.path = r.Method, r.Host, r.URL.Path // for the log line only
		return in, &errForwardAuthHeaders{f.proxy, missing}
	}
	in.method = strings.ToUpper(in.method)
	readClient(r, &in, f.family)
	return in, nil
}

func copyHeaders(r *http.Request, in *request, names []decisionHeader) {
	for _, n := range names {
		vs := r.Header[n.canonical]
		switch {
		case len(vs) == 1:
			in.headers[n.lower] = vs[0]
		case len(vs) > 1:
			in.headers[n.lower] = joinValues(n.lower, vs)
		}
	}
}

// joinValues joins a repeated header's values as Envoy does: cookies with
// "; ", everything else with ",".
func joinValues(lower string, vs []string) string {
	if lower == "cookie" {
		return strings.Join(vs, "; ")
	}
	return strings.Join(vs, ",")
}

// readEnvoy: Envoy's HTTP ext_authz (path_prefix: /authz) sends the
// original method and Host, and the original path after the prefix. No
// X-* header is read for the decision. X-Original-URI or X-Forwarded-Uri
// only refuses the request: Envoy never sets them (and should not pass
// them on), while nginx, Traefik and Caddy always do — a forward-auth
// proxy left on the default would otherwise have every request judged as
// its auth request, GET /authz/.
func readEnvoy(r *http.Request, in *request) string {
	if _, ok := r.Header["X-Original-Uri"]; ok {
		return "X-Original-URI" // reported as: must not carry one
	}
	if _, ok := r.Header["X-Forwarded-Uri"]; ok {
		return "X-Forwarded-Uri"
	}
	in.method, in.host = r.Method, r.Host
	in.path = strings.TrimPrefix(r.URL.RequestURI(), "/authz")
	if in.path == "" || in.path[0] != '/' {
		in.path = "/" + in.path
	}
	return ""
}

// readNginx: auth_request with proxy_set_header X-Original-URI
// $request_uri, X-Original-Method $request_method and Host $host.
func readNginx(r *http.Request, in *request) string {
	var ok bool
	if in.path, ok = onlyValue(r.Header, "X-Original-Uri"); !ok {
		return "X-Original-URI"
	}
	if in.method, ok = onlyValue(r.Header, "X-Original-Method"); !ok {
		return "X-Original-Method"
	}
	in.host = r.Host
	return ""
}

// readXForwarded: Traefik forwardAuth and Caddy forward_auth set
// X-Forwarded-Method, -Uri and -Host themselves.
func readXForwarded(r *http.Request, in *request) string {
	var ok bool
	if in.path, ok = onlyValue(r.Header, "X-Forwarded-Uri"); !ok {
		return "X-Forwarded-Uri"
	}
	if in.method, ok = onlyValue(r.Header, "X-Forwarded-Method"); !ok {
		return "X-Forwarded-Method"
	}
	if in.host, ok = onlyValue(r.Header, "X-Forwarded-Host"); !ok {
		return "X-Forwarded-Host"
	}
	return ""
}

// readApp reads the app header (forward_auth.app_header): absent, the
// default app; once, the app it names. Twice means the proxy appended to
// a client's copy instead of overwriting it, so neither is trusted.
func readApp(r *http.Request, in *request, canonical string) string {
	switch vs := r.Header[canonical]; len(vs) {
	case 0:
		return ""
	case 1:
		in.appName, in.appNamed = vs[0], true
		return ""
	}
	return canonical
}

// onlyValue returns the value of a header (canonical name) sent exactly
// once and not empty. Two values mean the proxy appended to the client's
// copy instead of overwriting it: neither can be trusted.
// Canonical names are looked up directly: Header.Get would canonicalise
// (and allocate for X-Original-URI) on every request.
func onlyValue(h http.Header, canonical string) (string, bool) {
	if vs := h[canonical]; len(vs) == 1 && vs[0] != "" {
		return vs[0], true
	}
	return "", false
}

// decisionHeaders are the request headers a decision reads (request.header
// callers: the token finder, the preflight test and CORS). Forward-auth
// copies only these: the proxy forwards all of the client's headers, and
// copying every one into a new map was most of fromForwardAuth's cost.
// net/http has already canonicalised the names in r.Header.
var decisionHeaders = [...]decisionHeader{
	{"authorization", "Authorization"},
	{"cookie", "Cookie"},
	{"origin", "Origin"},
	{"access-control-request-method", "Access-Control-Request-Method"},
	{"dpop", "Dpop"},
}

type decisionHeader struct{ lower, canonical string }

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
