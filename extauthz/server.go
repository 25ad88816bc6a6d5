// Package extauthz is the Envoy ext_authz decision service: for every
// request it finds the token, matches the route policy, verifies the token
// (cached), checks revocation, authorises, and answers — over gRPC
// (envoy.service.auth.v3.Authorization) or HTTP forward-auth (Envoy HTTP
// mode, nginx auth_request, Traefik forwardAuth, Caddy forward_auth).
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var _ authv3.AuthorizationServer = (*Server)(nil)

// Denylist is the revocation hook: Revoked reports whether a session (the
// token's `sid`) has been revoked. It is consulted on every check that has
// a verified token, cache hits included. Ready is part of /readyz and gRPC
// health, and says whether Revoked can be trusted: while it is false, a
// token that carries a sid (and is not already known revoked) gets
// UNAVAILABLE (reason revocations_unavailable), unless the Denylist also
// has a method FailOpen() bool that returns true. Nil in Options means no
// revocation check.
type Denylist interface {
	Revoked(sid string) bool
	Ready() bool
}

// failOpener is implemented by a Denylist that may be told to let tokens
// through while it is not ready (RevocationFeedConfig.FailOpen).
type failOpener interface{ FailOpen() bool }

// Options are the things a Server needs besides its Config.
type Options struct {
	// Logger for JSON logs; nil discards.
	Logger *slog.Logger
	// Registry receives the metrics; nil uses a private registry.
	Registry prometheus.Registerer
	// Gatherer serves /metrics; nil serves Registry when it is a
	// *prometheus.Registry, else /metrics is not routed.
	Gatherer prometheus.Gatherer
	// Clock is the time used for token validity and the cache; nil is time.Now.
	Clock func() time.Time
	// Denylist, when set, refuses tokens of revoked sessions (token_revoked).
	Denylist Denylist
	// HTTPClient fetches jwks_url; nil builds one per provider with its fetch_timeout.
	HTTPClient *http.Client
	// FetchBackoff is the first retry delay for a JWKS that fails at start
	// (doubling up to 30s). Default 500ms.
	FetchBackoff time.Duration
	// ReloadTimeout bounds how long Reload waits for a new config's keys.
	// Default 30s.
	ReloadTimeout time.Duration
	// HealthPoll is how often the one shared poller recomputes the health
	// status for Watch streams, for readiness that changes outside the
	// server (the denylist). Default 1s.
	HealthPoll time.Duration
	// MaxHealthWatches bounds the open grpc.health.v1.Health/Watch
	// streams; more are refused with RESOURCE_EXHAUSTED. Default 1024.
	MaxHealthWatches int
	// Tracer, when set, records a span per check (continuing the
	// request's traceparent), per signature verification on a cache miss
	// and per JWKS or discovery fetch. Nil is tracing off: no span is
	// started and the request headers are not read for it.
	Tracer trace.Tracer
}

// Server answers checks. It is safe for concurrent use; Reload swaps the
// whole configuration atomically while checks in flight finish on the old one.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	gatherer prometheus.Gatherer
	state    atomic.Pointer[state]
	reloadMu sync.Mutex
	stopping atomic.Bool
	health   *healthHub // the status every health Watch stream follows
	logLimit logLimiter
	tracer   trace.Tracer // nil: tracing off
	// realClock: Options.Clock was nil, so a check's start time is also
	// its clock reading (one time.Now per check instead of three).
	realClock bool
}

// NewServer builds a server from cfg. It starts fetching keys but does not
// wait for them: until a provider has keys, its tokens get UNAVAILABLE and
// /readyz answers 503. Close stops the background work.
func NewServer(cfg Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	realClock := opts.Clock == nil
	if realClock {
		opts.Clock = time.Now
	}
	if opts.FetchBackoff <= 0 {
		opts.FetchBackoff = 500 * time.Millisecond
	}
	if opts.ReloadTimeout <= 0 {
		opts.ReloadTimeout = 30 * time.Second
	}
	if opts.HealthPoll <= 0 {
		opts.HealthPoll = time.Second
	}
	if opts.MaxHealthWatches <= 0 {
		opts.MaxHealthWatches = 1024
	}
	reg := opts.Registry
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, opts.Gatherer = r, r
	}
	if opts.Gatherer == nil {
		if r, ok := reg.(*prometheus.Registry); ok {
			opts.Gatherer = r
		}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: m, gatherer: opts.Gatherer, tracer: opts.Tracer, realClock: realClock}
	s.health = newHealthHub(s.Ready, opts.HealthPoll, opts.MaxHealthWatches)
	st, err := s.buildState(cfg)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	return s, nil
}

// Check is the ext_authz gRPC method. An allow from the verified-token
// cache is a response shared with other Checks of the same token (built at
// most once a second): callers must treat it as read-only, as gRPC does.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	st := s.state.Load()
	in := fromCheckRequest(req)
	in.now = s.checkTime(st, start)
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.startCheckSpan(ctx, propagation.MapCarrier(in.headers))
	}
	out := st.decide(ctx, &in)
	s.observe(&in, &out, start)
	if span != nil {
		endCheckSpan(span, &in, &out)
	}
	if out.unavailable != nil {
		return nil, status.Error(codes.Unavailable, out.unavailable.Error())
	}
	return st.checkResponse(&out), nil
}

// decide is the pipeline: find the token → match the route policy →
// verify (cached) → check revocation → authorise → answer. The outcome is
// a value: a cached allow then allocates nothing here.
func (st *state) decide(ctx context.Context, in *request) outcome {
	a, unknown := st.policy.selectApp(in)
	in.app = a
	if unknown != nil {
		return st.denied(in, unknown, nil)
	}
	if st.policy.isPreflight(in) {
		return st.anonymous(in, a, ReasonPreflight, fromNowhere)
	}
	route := a.match(in)
	token, src, refused := st.tokens.find(in)
	if refused == nil && token == "" {
		if route.action == ActionRequired {
			return st.denied(in, deny(ReasonMissingToken, "a bearer token is required"), nil)
		}
		return st.anonymous(in, a, ReasonAnonymous, src)
	}
	var e *entry
	if refused == nil {
		var err error
		e, in.cache, err = st.verify(ctx, token, a, st.now(in))
		if err != nil {
			if unavailable := (*errUnavailable)(nil); errors.As(err, &unavailable) {
				if route.action == ActionPublic {
					return st.anonymous(in, a, ReasonAnonymous, src)
				}
				return outcome{reason: ReasonUnavailable, unavailable: unavailable}
			}
			// errors.As takes the address of its target: a variable of
			// this block, so only failed verifications pay for it.
			var d *denial
			if !errors.As(err, &d) {
				d = deny(ReasonInvalidToken, "the token could not be verified")
			}
			refused = d
		}
	}
	var nonce string
	if refused == nil {
		var err error
		if refused, nonce, err = st.checkHolder(in, a, route, e, token, src); err != nil {
			return outcome{reason: ReasonForwardAuthHeaders, unavailable: err}
		}
	}
	if refused == nil {
		var err error
		if refused, err = st.checkRevoked(e); err != nil {
			if route.action == ActionPublic {
				return st.anonymous(in, a, ReasonAnonymous, src)
			}
			return outcome{reason: ReasonRevocationsUnavailable, unavailable: err}
		}
	}
	if refused == nil {
		refused = route.authorize(e)
	}
	if refused != nil {
		if route.action == ActionPublic {
			return st.anonymous(in, a, ReasonAnonymous, src) // a bad token on a public route is ignored
		}
		return st.denied(in, refused, e)
	}
	o := st.allowed(in, e, src)
	o.dpopNonce = nonce
	return o
}

// verify answers from the cache or verifies and caches, for app a (its
// audiences and identity headers). The cache is keyed on a's class and
// the token's canonical spelling: the exact string is tried first (a hit
// costs one lookup), then, for a token ending in a high-S ECDSA
// signature, its low-S twin (no allocation either); on a miss the token's
// spelling is checked strictly before anything else.
func (st *state) verify(ctx context.Context, token string, a *app, now time.Time) (*entry, cacheUse, error) {
	if e := st.cache.get(a.class, token, now); e != nil {
		st.cache.count(true)
		return e, cacheHit, nil
	}
	if e := st.cache.getTwin(a.class, token, now); e != nil {
		st.cache.count(true)
		return e, cacheHit, nil
	}
	ct, d := splitToken(token)
	if d != nil {
		st.cache.count(false)
		return nil, cacheMiss, d
	}
	if ct.canonical != token {
		if e := st.cache.get(a.class, ct.canonical, now); e != nil {
			st.cache.count(true)
			return e, cacheHit, nil
		}
	}
	st.cache.count(false)
	vctx, span := startSpan(ctx, st.tracer, spanVerify, trace.SpanKindInternal)
	v, err := st.verifier.verify(vctx, ct, a.audiences)
	endSpan(span, err != nil, "refused")
	if err != nil {
		return nil, cacheMiss, err
	}
	set, unset := a.mapper.headers(v.claims, v.payload)
	var roles, scopes []string
	if rv, ok := lookupClaim(v.claims, st.rolesPath); ok {
		roles = stringList(rv)
	}
	if sv, ok := lookupClaim(v.claims, st.scopesPath); ok {
		scopes = stringList(sv)
	}
	// Everything a decision reads from the claims is taken now: the
	// decoded claims (a map of many small objects) and the payload they
	// point into are dropped, and the strings kept are copied into one
	// buffer, so a cached entry holds few objects for the collector to mark.
	v.claims, v.payload = nil, nil
	keep := []*string{&v.alg, &v.kid, &v.sub, &v.sid, &v.jti, &v.cnf.jkt, &v.cnf.dev}
	for i := range set {
		keep = append(keep, &set[i].value)
	}
	for _, list := range [2][]string{roles, scopes} {
		for i := range list {
			keep = append(keep, &list[i])
		}
	}
	packStrings(keep)
	e := newEntry(v, set, unset, st.cache != nil, a.mapper.canonicalName)
	e.roles, e.scopes = roles, scopes
	st.cache.add(a.class, ct.canonical, e)
	return e, cacheMiss, nil
}

// checkTime is a check's clock reading: its start time when the clock is
// the real one (no second time.Now), else the configured clock.
func (s *Server) checkTime(st *state, start time.Time) time.Time {
	if s.realClock {
		return start
	}
	return st.clock()
}

// now is in's clock reading (request.now), or the clock's when it has none.
func (st *state) now(in *request) time.Time {
	if !in.now.IsZero() {
		return in.now
	}
	return st.clock()
}

// errRevocationsUnavailable: the denylist has not loaded yet, so it cannot
// tell whether a session was revoked before extauthz started.
var errRevocationsUnavailable = errors.New("the revocation denylist has not loaded yet")

// checkRevoked refuses a token of a revoked session. A token that carries a
// sid while the denylist is not ready (a feed that has never synced) is an
// error, not an allow — unless the denylist was set to fail open. A token
// without a sid cannot be on the list and is not affected.
func (st *state) checkRevoked(e *entry) (*denial, error) {
	if st.denylist == nil || e.v.sid == "" {
		return nil, nil
	}
	if st.denylist.Revoked(e.v.sid) {
		return deny(ReasonTokenRevoked, "the session has been revoked"), nil
	}
	if !st.denylistFailOpen && !st.denylist.Ready() {
		return nil, errRevocationsUnavailable
	}
	return nil, nil
}

// observe counts every check and logs it: denials at info, failures at
// warn, allows at debug. Denial and failure lines are limited to
// logs.denials_per_second (a flood of bad tokens must not become a flood of
// log lines); the metrics stay exact, dropped lines are counted, and the
// next line written is preceded by a summary of how many were dropped.
func (s *Server) observe(in *request, o *outcome, start time.Time) {
	s.metrics.duration.Observe(time.Since(start).Seconds())
	s.metrics.countCheck(o.decision(), o.reason)
	if o.unavailable == nil && o.denial == nil {
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			attrs := []any{"decision", decisionAllow, "reason", o.reason, "method", in.method, "host", in.host, "path", pathOnly(in.path)}
			if in.app != nil {
				attrs = append(attrs, "app", in.app.name)
			}
			if o.entry != nil {
				attrs = append(attrs, "sub", o.entry.v.sub, "sid", o.entry.v.sid, "jti", o.entry.v.jti, "kid", o.entry.v.kid)
			}
			s.log.Debug("check allowed", attrs...)
		}
		return
	}
	limit := s.state.Load().logsPerSecond
	ok, dropped := s.logLimit.admit(s.opts.Clock(), limit)
	if !ok {
		s.metrics.logDropped.Inc()
		return
	}
	if dropped > 0 {
		s.log.Warn("check logs dropped", "dropped", dropped, "limit_per_second", limit)
	}
	if o.unavailable != nil {
		s.log.Warn("check failed", "decision", decisionError, "reason", o.reason, "error", o.unavailable.Error(), "method", in.method, "host", in.host, "path", pathOnly(in.path))
		return
	}
	attrs := []any{"decision", decisionDeny, "reason", o.reason, "detail", o.denial.description, "method", in.method, "host", in.host, "path", pathOnly(in.path)}
	if in.app != nil {
		attrs = append(attrs, "app", in.app.name)
	}
	if o.entry != nil {
		attrs = append(attrs, "sub", o.entry.v.sub, "sid", o.entry.v.sid, "jti", o.entry.v.jti, "kid", o.entry.v.kid)
	}
	s.log.Info("check denied", attrs...)
}

// logLimiter admits at most a number of lines per second of the clock and
// counts the rest until the next line it admits.
type logLimiter struct {
	mu      sync.Mutex
	second  int64
	written int
	dropped int64
}

// admit reports whether a line may be written now, and how many were
// dropped since the last one written (to be summarised first).
func (l *logLimiter) admit(now time.Time, perSecond int) (ok bool, dropped int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.second {
		l.second, l.written = sec, 0
	}
	if l.written >= perSecond {
		l.dropped++
		return false, 0
	}
	l.written++
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}

// pathOnly drops the query: it may carry a token (query_param).
func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// state is one configuration turned into ready-made values.
type state struct {
	policy        *policy
	tokens        tokenFinder
	verifier      verifier
	providers     []*provider
	cache         *tokenCache
	denylist      Denylist
	rolesPath     []string
	scopesPath    []string
	removeAuth    bool
	corsCreds     bool
	realm         string
	expiresHeader string
	expiresKey    string   // expiresHeader, canonical (HTTP)
	expiresValues []string // {expiresHeader}, shared by HTTP answers
	logsPerSecond int      // logs.denials_per_second
	clock         func() time.Time
	tracer        trace.Tracer // nil: tracing off
	cancel        context.CancelFunc

	// denylistFailOpen: the denylist asked that sid tokens be decided
	// without it while it is not ready.
	denylistFailOpen bool

	dpop       *dpopState
	dpopShared *dpopShared // kept by the next state (Reload)
}

func (s *Server) buildState(cfg Config) (st *state, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config:\n%w", err)
	}
	cfg = cfg.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	st = &state{
		policy:        newPolicy(cfg),
		tokens:        tokenFinder{cookie: cfg.Token.Cookie, queryParam: cfg.Token.QueryParam, maxBytes: cfg.MaxTokenBytes},
		verifier:      verifier{byIssuer: map[string]*provider{}, clock: s.opts.Clock, rolesPath: strings.Split(cfg.Authorization.RolesClaim, ".")},
		denylist:      s.opts.Denylist,
		rolesPath:     strings.Split(cfg.Authorization.RolesClaim, "."),
		scopesPath:    strings.Split(cfg.Authorization.ScopesClaim, "."),
		removeAuth:    cfg.Token.RemoveAuthorizationHeader,
		corsCreds:     *cfg.CORS.AllowCredentials,
		realm:         cfg.Realm,
		expiresHeader: strings.ToLower(cfg.Headers.ExpiresInHeader),
		expiresKey:    http.CanonicalHeaderKey(cfg.Headers.ExpiresInHeader),
		expiresValues: []string{strings.ToLower(cfg.Headers.ExpiresInHeader)},
		logsPerSecond: cfg.Logs.DenialsPerSecond,
		clock:         s.opts.Clock,
		tracer:        s.opts.Tracer,
		cancel:        cancel,
	}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	if fo, ok := st.denylist.(failOpener); ok {
		st.denylistFailOpen = fo.FailOpen()
	}
	var prevDPoP *dpopShared
	if prev := s.state.Load(); prev != nil {
		prevDPoP = prev.dpopShared
	}
	if st.dpop, st.dpopShared, err = newDPoPState(cfg.DPoP, prevDPoP, s.opts.Clock); err != nil {
		return st, err
	}
	if !cfg.Cache.Disabled {
		if st.cache, err = newTokenCache(cfg.Cache.Size, cfg.Cache.MaxBytes, st.policy.classes(), s.metrics); err != nil {
			return st, fmt.Errorf("cache: %w", err)
		}
	}
	for i, pc := range cfg.Providers {
		p, err := s.buildProvider(ctx, pc)
		if p != nil {
			st.providers = append(st.providers, p)
		}
		if err != nil {
			return st, fmt.Errorf("providers[%d]: %w", i, err)
		}
		st.verifier.byIssuer[p.issuer] = p
		if p.keys != nil {
			go s.notifyWhenLoaded(ctx, p.keys.ready)
		}
	}
	return st, nil
}

// notifyWhenLoaded updates the health status when a provider's first keys
// load (or gives up when its configuration is replaced).
func (s *Server) notifyWhenLoaded(ctx context.Context, loaded <-chan struct{}) {
	select {
	case <-loaded:
		s.readinessChanged()
	case <-ctx.Done():
	}
}

func (s *Server) buildProvider(ctx context.Context, pc Provider) (*provider, error) {
	p := &provider{
		name: pc.Name, issuer: pc.Issuer, audiences: pc.Audiences,
		algs:   map[string]jwa.SignatureAlgorithm{},
		leeway: pc.Leeway.Duration, maxLifetime: pc.MaxLifetime.Duration, requireTyp: pc.RequireTypATJWT,
	}
	for _, a := range pc.Algorithms {
		p.algs[a] = supportedAlgs[a]
	}
	if pc.AllowedRoles != nil {
		p.allowedRoles = map[string]bool{}
		for _, r := range pc.AllowedRoles {
			p.allowedRoles[r] = true
		}
	}
	p.subjectPrefix = pc.SubjectPrefix
	secret := pc.HMACSecret
	if pc.HMACSecretFile != "" {
		b, err := os.ReadFile(pc.HMACSecretFile)
		if err != nil {
			return nil, fmt.Errorf("hmac_secret_file: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
		if len(secret) < 32 {
			return nil, errors.New("hmac_secret_file: the secret must be at least 32 bytes")
		}
	}
	if secret != "" {
		p.hmac = &verifyKey{id: "hmac", alg: "HS256", family: "oct", raw: []byte(secret)}
	}
	log := s.log.With("provider", pc.Name)
	src := newKeySource(ctx, pc, s.metrics, log, s.opts.Clock)
	src.tracer = s.opts.Tracer
	switch {
	case len(pc.JWKS) > 0:
		if err := newInlineSource(src, pc.JWKS); err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
	case pc.JWKSFile != "":
		if err := startFileSource(ctx, src, pc.JWKSFile, pc.FilePollInterval.Duration); err != nil {
			return nil, err
		}
	case pc.Discovery:
		d, err := startDiscovery(ctx, src, pc, s.opts.HTTPClient, s.opts.FetchBackoff)
		if err != nil {
			return nil, err
		}
		p.discovery = d
	case pc.JWKSURL != "":
		u, err := startURLSource(ctx, src, pc, s.opts.HTTPClient, s.opts.FetchBackoff)
		if err != nil {
			return nil, err
		}
		p.url = u
	default:
		return p, nil // HMAC only
	}
	p.keys = src
	return p, nil
}

func (st *state) ready() bool {
	for _, p := range st.providers {
		if !p.ready() {
			return false
		}
	}
	return st.denylist == nil || st.denylist.Ready()
}

// waitKeys waits until every provider has keys.
func (st *state) waitKeys(ctx context.Context) error {
	for _, p := range st.providers {
		if p.keys == nil {
			continue
		}
		select {
		case <-p.keys.ready:
		case <-ctx.Done():
			return fmt.Errorf("provider %s: no keys loaded: %w", p.name, ctx.Err())
		}
	}
	return nil
}

func (st *state) close() {
	st.cancel()
	for _, p := range st.providers {
		p.close()
	}
}

// Ready reports whether every provider has loaded keys and the denylist
// (if any) is ready, and the server is not shutting down.
func (s *Server) Ready() bool {
	st := s.state.Load() // nil while NewServer builds the first one
	return st != nil && !s.stopping.Load() && st.ready()
}

// WaitReady blocks until every provider has keys or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error { return s.state.Load().waitKeys(ctx) }

// Reload replaces the configuration. The new one must validate, build and
// load its keys (within Options.ReloadTimeout); otherwise it is refused, the
// old one stays, and the error says why. Checks in flight finish on the
// configuration they started with.
func (s *Server) Reload(ctx context.Context, cfg Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	st, err := s.buildState(cfg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.opts.ReloadTimeout)
	defer cancel()
	if err := st.waitKeys(wctx); err != nil {
		st.close()
		return err
	}
	old := s.state.Swap(st)
	old.close()
	s.readinessChanged()
	return nil
}

// Shutdown marks the server as stopping: /readyz and gRPC health answer
// NOT_SERVING from now on, and every health Watch stream is told at once,
// so load balancers drain it before the listeners close (after the drain
// period; then EndWatches).
func (s *Server) Shutdown() {
	s.stopping.Store(true)
	s.readinessChanged()
}

// Close stops background key refreshes and the health poller, and ends
// the health Watch streams.
func (s *Server) Close() {
	s.health.end()
	s.health.close()
	s.state.Load().close()
}

// RegisterGRPC registers the Authorization and Health services on g.
func (s *Server) RegisterGRPC(g *grpc.Server) {
	authv3.RegisterAuthorizationServer(g, s)
	healthpb.RegisterHealthServer(g, &healthServer{s: s})
}
