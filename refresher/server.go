package refresher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/refresher/store"
)

// Options are the parts a Server is wired with.
type Options struct {
	Store store.Store
	Keys  *keyset.Keys
	// Logger gets JSON audit and error logs; never token values.
	Logger *slog.Logger
	// Registry receives the metrics; nil uses a private registry.
	Registry prometheus.Registerer
	// Gatherer serves /metrics; nil serves Registry when it is a
	// *prometheus.Registry, else /metrics is not routed.
	Gatherer prometheus.Gatherer
	// Clock is the time used for token lifetimes, the grace window and the
	// revocation feed; nil is time.Now. Tests pass a fake one.
	Clock func() time.Time
	// Tracer, when set, records a span per request (continuing its
	// traceparent) with the store calls as children. Nil is tracing off.
	Tracer trace.Tracer
}

// Server is the refresher's HTTP API.
type Server struct {
	cfg       Config
	issuer    *Issuer
	keys      *signingKeys
	store     store.Store
	log       *slog.Logger
	gatherer  prometheus.Gatherer
	adminHash [32]byte
	cors      *cors
	dpop      *dpopChecks
	// drain is closed by Drain: long polls answer at once so a graceful
	// shutdown does not wait out their timeouts.
	drain     chan struct{}
	drainOnce sync.Once
	// stopping is set by Shutdown: /readyz answers 503 from then on.
	stopping atomic.Bool
	tracer   trace.Tracer // nil: tracing off
}

// NewServer validates cfg and wires a server.
func NewServer(cfg Config, o Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Store == nil {
		return nil, errors.New("refresher: no store")
	}
	keys := &signingKeys{}
	if err := keys.set(o.Keys); err != nil {
		return nil, fmt.Errorf("refresher: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Registry == nil {
		r := prometheus.NewRegistry()
		o.Registry, o.Gatherer = r, r
	}
	if o.Gatherer == nil {
		if r, ok := o.Registry.(*prometheus.Registry); ok {
			o.Gatherer = r
		}
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("refresher: register metrics: %w", err)
	}
	dc, err := newDPoPChecks(cfg, o.Clock)
	if err != nil {
		return nil, fmt.Errorf("refresher: %w", err)
	}
	iss := newIssuer(cfg, o.Store, keys, m, o.Logger, o.Clock)
	iss.tracer = o.Tracer
	return &Server{
		tracer:    o.Tracer,
		cfg:       cfg,
		issuer:    iss,
		keys:      keys,
		store:     o.Store,
		log:       o.Logger,
		gatherer:  o.Gatherer,
		adminHash: sha256.Sum256([]byte(cfg.AdminToken)),
		cors:      newCORS(cfg.CORSAllowedOrigins),
		dpop:      dc,
		drain:     make(chan struct{}),
	}, nil
}

// Drain makes long polls in flight (and new ones) answer at once with what
// they have, so a shutdown is not held up by them; register it with
// http.Server.RegisterOnShutdown. Other requests are unaffected.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.drain) }) }

// Shutdown turns /readyz to 503 while every request is still served, so
// load balancers stop sending before the listener closes.
func (s *Server) Shutdown() { s.stopping.Store(true) }

// Issuer returns the token logic behind the handlers.
func (s *Server) Issuer() *Issuer { return s.issuer }

// SetKeys switches the key set at run time: the new signer signs from the
// next token on, and JWKS publishes the new public keys.
func (s *Server) SetKeys(k *keyset.Keys) error { return s.keys.set(k) }

// Routes returns the HTTP handler.
func (s *Server) Routes() http.Handler {
	mux := http.NewServeMux()
	browser := func(h http.HandlerFunc) http.Handler { return s.cors.wrap(s.limitBody(h)) }
	mux.Handle("POST /v1/token", browser(s.handleToken))
	mux.Handle("OPTIONS /v1/token", browser(s.handleToken))
	mux.Handle("POST /v1/revoke", browser(s.handleRevoke))
	mux.Handle("OPTIONS /v1/revoke", browser(s.handleRevoke))
	// The same revocation under the cookie's path, so a cookie-transport
	// browser can sign out: the cookie is only sent to /v1/token and below.
	mux.Handle("POST /v1/token/revoke", browser(s.handleRevoke))
	mux.Handle("OPTIONS /v1/token/revoke", browser(s.handleRevoke))

	mux.Handle("POST /v1/sessions", s.admin(s.handleCreateSession))
	mux.Handle("PATCH /v1/sessions/{sid}", s.admin(s.handlePatchSession))
	mux.Handle("DELETE /v1/sessions/{sid}", s.admin(s.handleDeleteSession))
	mux.Handle("DELETE /v1/subjects/{sub}/sessions", s.admin(s.handleDeleteSubject))
	mux.Handle("GET /v1/revocations", s.admin(s.handleRevocations))

	mux.HandleFunc("GET /.well-known/jwks.json", s.handleJWKS)
	mux.HandleFunc("GET "+metadataPath, s.handleMetadata)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	if s.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	if s.tracer != nil {
		return s.traced(mux)
	}
	return mux
}

func (s *Server) limitBody(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		h(w, r)
	})
}

// admin requires the admin bearer token. Both sides are hashed first so the
// constant-time comparison also hides the token's length.
func (s *Server) admin(h http.HandlerFunc) http.Handler {
	return s.limitBody(func(w http.ResponseWriter, r *http.Request) {
		// The scheme name is case-insensitive (RFC 9110 §11.1).
		auth := r.Header.Get("Authorization")
		ok := len(auth) > 7 && strings.EqualFold(auth[:7], "Bearer ")
		given := ""
		if ok {
			given = auth[7:]
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(given)))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.adminHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tokengate-admin"`)
			s.writeError(w, r, unauthorized())
			return
		}
		h(w, r)
	})
}

// tokenJSON is every token response (RFC 6749 §5.1 plus session_id).
type tokenJSON struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token,omitempty"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
	SessionID        string `json:"session_id"`
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	req, err := decodeSessionRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.JKT, err = s.signinKey(r, req.JKT); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.issuer.StartSession(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The login backend always gets the refresh token in the body (it is a
	// trusted server); with cookie transport it also gets the cookie to
	// pass on to the browser.
	if s.cfg.RefreshTokenTransport.cookie() {
		http.SetCookie(w, s.refreshCookie(p.RefreshToken, p.RefreshExpiresAt))
	}
	s.render(w, r, http.StatusCreated, tokenBody(p, true))
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	token, fromCookie, err := s.decodeTokenRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c := s.client(r)
	proof, err := s.dpop.checkTokenProof(r)
	if err != nil {
		err = s.issuer.ProofRefused(r.Context(), c, asError(err))
		traceAttr(r.Context(), s.tracer != nil, attrOutcome, asError(err).Reason)
		s.writeError(w, r, err)
		return
	}
	c.JKT = proof.jkt
	if proof.nonce != "" {
		w.Header().Set("DPoP-Nonce", proof.nonce)
	}
	p, err := s.issuer.Refresh(r.Context(), token, c)
	if err != nil {
		traceAttr(r.Context(), s.tracer != nil, attrOutcome, asError(err).Reason)
		if e := asError(err); fromCookie && e.Code == "invalid_grant" {
			http.SetCookie(w, s.clearCookie())
		}
		s.writeError(w, r, err)
		return
	}
	if s.cfg.RefreshTokenTransport.cookie() {
		http.SetCookie(w, s.refreshCookie(p.RefreshToken, p.RefreshExpiresAt))
	}
	s.render(w, r, http.StatusOK, tokenBody(p, s.cfg.RefreshTokenTransport.body()))
}

func tokenBody(p Pair, withRefresh bool) tokenJSON {
	t := tokenJSON{AccessToken: p.AccessToken, TokenType: "Bearer", ExpiresIn: p.ExpiresIn,
		RefreshExpiresIn: p.RefreshExpiresIn, SessionID: p.SessionID}
	if p.JKT != "" {
		// RFC 9449 §5: a DPoP-bound access token.
		t.TokenType = "DPoP"
	}
	if withRefresh {
		t.RefreshToken = p.RefreshToken
	}
	return t
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	token, fromCookie, err := s.decodeRevokeRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.issuer.RevokeToken(r.Context(), token, s.client(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	if fromCookie || s.cfg.RefreshTokenTransport.cookie() {
		http.SetCookie(w, s.clearCookie())
	}
	// RFC 7009 §2.2: 200 whether or not the token was known.
	s.render(w, r, http.StatusOK, struct{}{})
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("sid")
	revoked, err := s.issuer.RevokeSession(r.Context(), sid)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, map[string]any{"session_id": sid, "revoked": revoked})
}

func (s *Server) handleDeleteSubject(w http.ResponseWriter, r *http.Request) {
	ids, err := s.issuer.RevokeSubject(r.Context(), r.PathValue("sub"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if ids == nil {
		ids = []string{}
	}
	s.render(w, r, http.StatusOK, map[string]any{"sub": r.PathValue("sub"), "revoked": ids})
}

func (s *Server) handlePatchSession(w http.ResponseWriter, r *http.Request) {
	claims, err := decodePatchRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sess, err := s.issuer.PatchClaims(r.Context(), r.PathValue("sid"), claims)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, map[string]any{"session_id": sess.ID, "sub": sess.Subject, "claims": sess.Claims})
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.JWKSMaxAge/time.Second)))
	w.Write(s.keys.jwks())
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.stopping.Load() {
		s.render(w, r, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.WarnContext(r.Context(), "store not ready", "error", err.Error())
		s.render(w, r, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "store": "unreachable"})
		return
	}
	s.render(w, r, http.StatusOK, map[string]string{"status": "ok", "store": "ok"})
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

// render is the one JSON writer: it encodes into a buffer first, so an
// encoding failure becomes a clean 500 instead of half a response.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		s.log.ErrorContext(r.Context(), "response encoding failed", "path", r.URL.Path, "error", err.Error())
		http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorJSON struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// writeError maps any error to its JSON answer; technical causes are logged
// (they never carry token values) and not sent.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := asError(err)
	traceAttr(r.Context(), s.tracer != nil, attrReason, e.Reason)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(seconds(e.RetryAfter))))
	}
	if e.DPoPNonce != "" {
		w.Header().Set("DPoP-Nonce", e.DPoPNonce)
	}
	if e.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "reason", e.Reason, "error", err.Error())
	}
	s.render(w, r, e.Status, errorJSON{Error: e.Code, Description: e.Description})
}

// JWKS returns the public key set the server publishes (JSON).
func (s *Server) JWKS() []byte { return s.keys.jwks() }

// signinKey decides the DPoP key a new session is bound to: the key of the
// proof the login backend forwarded in the DPoP header, or the dpop_jkt it
// sent (it verified the proof itself); both must agree. With DPoP off both
// are ignored; under required one of them must be there.
func (s *Server) signinKey(r *http.Request, bodyJKT string) (string, error) {
	if s.dpop.mode == DPoPOff {
		return "", nil
	}
	proofJKT, err := s.dpop.checkSigninProof(r)
	if err != nil {
		return "", err
	}
	switch {
	case proofJKT != "" && bodyJKT != "" && proofJKT != bodyJKT:
		return "", invalidRequest("dpop_jkt: differs from the key of the DPoP proof")
	case proofJKT != "":
		return proofJKT, nil
	case bodyJKT != "":
		return bodyJKT, nil
	case s.dpop.mode == DPoPRequired:
		return "", invalidRequest("DPoP: required: forward the browser's DPoP proof in the DPoP header or send its key's thumbprint as dpop_jkt")
	}
	return "", nil
}
