package refresher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/tokengate/tokengate/refresher/store"
)

// Pair is an issued access+refresh pair, as the token endpoints answer it.
type Pair struct {
	AccessToken      string
	ExpiresIn        int64 // seconds
	RefreshToken     string
	RefreshExpiresIn int64 // seconds
	SessionID        string
	// RefreshExpiresAt is when the refresh token's idle lifetime ends (the
	// cookie's Expires).
	RefreshExpiresAt time.Time
	// JKT is the DPoP key thumbprint the access token is bound to (its
	// cnf.jkt; "" for a Bearer token): the answer's token_type is DPoP.
	JKT string
}

// Client identifies who made a refresh, for rate limits, the audit log and
// the token's bindings.
type Client struct {
	IP        string
	UserAgent string
	// JKT is the thumbprint of the DPoP key the request proved it holds (a
	// verified proof); "" for none.
	JKT string
}

// SessionRequest is the body of POST /v1/sessions.
type SessionRequest struct {
	Subject string
	// Claims is a JSON object copied into every access token of the session.
	Claims json.RawMessage
	// IdleTTL overrides Config.RefreshTTL when shorter; zero uses it.
	IdleTTL time.Duration
	// JKT binds the session to a DPoP key (the thumbprint of a proof the
	// login backend forwarded, or its dpop_jkt); "" leaves it unbound.
	JKT string
	// DeviceID is the device identifier (opaque, at most 256 bytes); the
	// session keeps only its SHA-256, and every access token carries that
	// as cnf.dev.
	DeviceID string
	// ClientIP is the browser's address as the login backend saw it; with
	// Config.BindNetwork it is the first access token's cnf.ip.
	ClientIP string
}

// reservedClaims are set by the issuer; session claims cannot override them.
var reservedClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "nbf": true, "jti": true, "sid": true,
	// cnf carries the token's bindings (DPoP key, network, device), which
	// only the refresher sets: a session claim must not forge one.
	"cnf": true,
}

// Issuer owns the token logic: start sessions, rotate, replay, detect reuse,
// revoke. Handlers call it; it calls the store.
type Issuer struct {
	cfg     Config
	store   store.Store
	keys    *signingKeys
	now     func() time.Time
	recent  *recent
	unacked *unacked
	// snaps: nil unless the store has the one-step rotation
	// (store.SnapshotRotator).
	snaps   *snapshots
	fast    store.SnapshotRotator
	flight  singleflight.Group
	ipLimit *limit
	sidLim  *limit
	metrics *metrics
	log     *slog.Logger
	tracer  trace.Tracer // nil: tracing off
}

func newIssuer(cfg Config, st store.Store, keys *signingKeys, m *metrics, log *slog.Logger, now func() time.Time) *Issuer {
	var snaps *snapshots
	fast, ok := st.(store.SnapshotRotator)
	if ok {
		snaps = newSnapshots(cfg.RecentSize)
	}
	return &Issuer{
		snaps:   snaps,
		fast:    fast,
		cfg:     cfg,
		store:   st,
		keys:    keys,
		now:     now,
		recent:  newRecent(cfg.RecentSize, cfg.ReuseGrace),
		unacked: newUnacked(cfg.RecentSize),
		ipLimit: newLimit("ip", cfg.RateLimitIP, cfg.RateLimitIPBurst, st, now, cfg.StoreTimeout, m, log),
		sidLim:  newLimit("session", cfg.RateLimitSession, cfg.RateLimitSessionBurst, st, now, cfg.StoreTimeout, m, log),
		metrics: m,
		log:     log,
	}
}

// call runs one store operation with the store timeout, recording latency.
// With tracing on, it is a child span (store.<op>) of the request's.
func (i *Issuer) call(ctx context.Context, op string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, i.cfg.StoreTimeout)
	defer cancel()
	var span trace.Span
	if i.tracer != nil {
		ctx, span = i.startStoreSpan(ctx, op)
	}
	start := time.Now()
	err := f(ctx)
	i.metrics.observeStore(op, start, ignoreNotFound(err))
	if span != nil {
		endStoreSpan(span, ignoreNotFound(err))
	}
	return err
}

func ignoreNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// checkClaims validates session claims: a JSON object without reserved names.
// It returns the compacted object ("{}" for none).
func checkClaims(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalidRequest("claims: must be a JSON object")
	}
	for name := range m {
		if reservedClaims[name] {
			return nil, invalidRequest("claims.%s: reserved claim, set by the refresher", name)
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, invalidRequest("claims: %v", err)
	}
	return buf.Bytes(), nil
}

// StartSession creates a session for a subject and issues its first pair.
func (i *Issuer) StartSession(ctx context.Context, req SessionRequest) (Pair, error) {
	if req.Subject == "" {
		return Pair{}, invalidRequest("sub: required")
	}
	claims, err := checkClaims(req.Claims)
	if err != nil {
		return Pair{}, err
	}
	idle := i.cfg.RefreshTTL
	if req.IdleTTL < 0 || req.IdleTTL > i.cfg.RefreshTTL {
		return Pair{}, invalidRequest("idle_ttl: must be between 1s and %s (the refresh TTL), got %s", i.cfg.RefreshTTL, req.IdleTTL)
	}
	if req.IdleTTL > 0 {
		idle = req.IdleTTL
	}
	now := i.now()
	sess := store.Session{
		ID: newID(), Subject: req.Subject, Claims: claims, CreatedAt: now,
		IdleTTL: idle, ExpiresAt: now.Add(i.cfg.SessionMaxAge), JKT: req.JKT,
	}
	if req.DeviceID != "" {
		sess.Device = deviceHash(req.DeviceID)
	}
	token, hash := newRefreshToken()
	first := store.Token{Hash: hash, SessionID: sess.ID, IssuedAt: now, ExpiresAt: minTime(now.Add(idle), sess.ExpiresAt)}
	p, err := i.mint(sess, token, first.ExpiresAt, now, binding{jkt: sess.JKT, ip: i.boundIP(req.ClientIP)})
	if err != nil {
		return Pair{}, err
	}
	err = i.call(ctx, "create_session", func(ctx context.Context) error { return i.store.CreateSession(ctx, sess, first) })
	if err != nil {
		return Pair{}, unavailable("create_session", err)
	}
	i.metrics.sessions.Inc()
	i.snaps.add(hash, sess)
	i.log.InfoContext(ctx, "session started", "sid", sess.ID, "sub", sess.Subject, "jti", p.JTI, "dpop", sess.JKT != "")
	return i.answer(p, now), nil
}

// binding is what an access token is bound to besides its session's device.
type binding struct {
	jkt string // DPoP key thumbprint (cnf.jkt), "" for a Bearer token
	ip  string // client address (cnf.ip), "" for none
}

// boundIP is the cnf.ip of a token for a client at ip: ip with network
// binding on, else nothing.
func (i *Issuer) boundIP(ip string) string {
	if !i.cfg.BindNetwork {
		return ""
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		// Not an address (a proxy header gone wrong): no binding rather
		// than one nothing can match.
		return ""
	}
	return a.WithZone("").Unmap().String()
}

// deviceHash is what a session keeps of a device identifier (cnf.dev):
// base64url of its SHA-256, so the identifier itself is never stored or
// put in a token.
func deviceHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// mint signs an access token for sess and packs it with the refresh token.
// The token carries cnf (RFC 7800) when it is bound to anything: the DPoP
// key (jkt), the client's address (ip), the session's device (dev).
func (i *Issuer) mint(sess store.Session, refresh string, refreshExp, now time.Time, b binding) (issuedPair, error) {
	claims := map[string]any{}
	if len(sess.Claims) > 0 {
		if err := json.Unmarshal(sess.Claims, &claims); err != nil {
			return issuedPair{}, fmt.Errorf("session %s claims: %w", sess.ID, err)
		}
	}
	// Reserved names are refused when claims are set; deleting them again
	// here keeps a record written by other means from overriding them.
	for name := range reservedClaims {
		delete(claims, name)
	}
	exp := minTime(now.Add(i.cfg.AccessTTL), sess.ExpiresAt)
	jti := newID()
	claims["iss"] = i.cfg.Issuer
	claims["sub"] = sess.Subject
	if len(i.cfg.Audience) == 1 {
		claims["aud"] = i.cfg.Audience[0]
	} else {
		claims["aud"] = i.cfg.Audience
	}
	claims["exp"] = exp.Unix()
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["jti"] = jti
	claims["sid"] = sess.ID
	cnf := map[string]string{}
	if b.jkt != "" {
		cnf["jkt"] = b.jkt
	}
	if b.ip != "" {
		cnf["ip"] = b.ip
	}
	if sess.Device != "" {
		cnf["dev"] = sess.Device
	}
	if len(cnf) > 0 {
		claims["cnf"] = cnf
	}
	at, _, err := i.keys.sign(claims)
	if err != nil {
		return issuedPair{}, err
	}
	return issuedPair{AccessToken: at, AccessExpiresAt: time.Unix(exp.Unix(), 0), RefreshToken: refresh,
		RefreshExpiresAt: refreshExp, SessionID: sess.ID, JTI: jti, JKT: b.jkt}, nil
}

func (i *Issuer) answer(p issuedPair, now time.Time) Pair {
	return Pair{
		AccessToken: p.AccessToken, ExpiresIn: seconds(p.AccessExpiresAt.Sub(now)),
		RefreshToken: p.RefreshToken, RefreshExpiresIn: seconds(p.RefreshExpiresAt.Sub(now)),
		SessionID: p.SessionID, RefreshExpiresAt: p.RefreshExpiresAt, JKT: p.JKT,
	}
}

func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Refresh answers one refresh with token (RFC 6749 §6). Concurrent
// refreshes of one token share one answer (singleflight): one rotation, or
// for a replay this replica remembers, one session read (the store still
// decides). Replays spend no rate-limit token.
func (i *Issuer) Refresh(ctx context.Context, token string, c Client) (Pair, error) {
	if !wellFormed(token) {
		if wait := i.ipLimit.wait(ctx, c.IP); wait > 0 {
			i.metrics.rateLimited.WithLabelValues("ip").Inc()
			return Pair{}, rateLimited("ip", wait)
		}
		i.ipLimit.count(ctx, c.IP)
		i.metrics.failures.WithLabelValues("malformed").Inc()
		return Pair{}, invalidGrant("malformed", "refresh_token is not a token this server issued")
	}
	hash := hashToken(token)
	leader := false
	// The rotation must not die with the first caller's request: others
	// share its result. Store calls carry their own timeout.
	detached := context.WithoutCancel(ctx)
	// Only requests that proved the same DPoP key share an answer: a
	// request with another key (or none) must not get the pair a request
	// with the session's key is about to receive. Each is decided by the
	// store on its own.
	v, err, _ := i.flight.Do(hash+"\x00"+c.JKT, func() (any, error) {
		leader = true
		return i.rotate(detached, token, hash, c)
	})
	if err != nil {
		return Pair{}, err
	}
	if !leader {
		i.metrics.replays.WithLabelValues("shared").Inc()
		traceAttr(ctx, i.tracer != nil, attrOutcome, "shared")
	}
	return i.answer(v.(issuedPair), i.now()), nil
}

// replayRecent answers a parent this replica rotated (or replayed) less
// than the grace window ago, if the store still allows its replay: the
// session is active and the parent's child is the session's current token
// (store.Decide on the remembered parent and the session as stored now).
// Any other answer is not decided here: ok is false and the caller goes to
// the store's Rotate, which detects the reuse (and revokes the session) or
// refuses the token. Another replica may have rotated the child or revoked
// the session since this replica remembered the pair: its memory saves the
// token read, the signing and the store's write, never the decision.
func (i *Issuer) replayRecent(ctx context.Context, token, hash string, now time.Time, c Client) (issuedPair, bool, error) {
	e, ok := i.recent.lookup(hash, now)
	if !ok {
		return issuedPair{}, false, nil
	}
	var sess store.Session
	err := i.call(ctx, "get_session", func(ctx context.Context) (err error) { sess, err = i.store.GetSession(ctx, e.sid); return })
	if errors.Is(err, store.ErrNotFound) {
		i.recent.remove(hash)
		return issuedPair{}, false, nil
	} else if err != nil {
		return issuedPair{}, false, unavailable("get_session", err)
	}
	switch store.Decide(e.token(), sess, store.RotateRequest{Now: now, Grace: i.cfg.ReuseGrace, JKT: c.JKT}) {
	case store.Replayed:
	case store.KeyMismatch:
		// Not the session's key: the entry stays for the key's holder. The
		// store would answer the same (a bound session's key never
		// changes), so the refusal is decided here.
		return issuedPair{}, false, i.keyMismatch(ctx, c, sess)
	default:
		i.recent.remove(hash)
		return issuedPair{}, false, nil
	}
	p, err := unseal(token, hash, e.sealed)
	if err != nil {
		i.recent.remove(hash)
		return issuedPair{}, false, nil
	}
	i.metrics.replays.WithLabelValues("lru").Inc()
	traceAttr(ctx, i.tracer != nil, attrOutcome, "replayed")
	return p, true, nil
}

// readParent reads the presented token's record and, on a backend that
// reads both in one go (store.TokenSessionGetter), its session too (read
// true; the zero Session when the session does not exist). Either way the
// call is the store operation "get_token".
func (i *Issuer) readParent(ctx context.Context, hash string) (parent store.Token, sess store.Session, read bool, err error) {
	g, both := i.store.(store.TokenSessionGetter)
	err = i.call(ctx, "get_token", func(ctx context.Context) (err error) {
		if both {
			parent, sess, err = g.GetTokenSession(ctx, hash)
			return err
		}
		parent, err = i.store.GetToken(ctx, hash)
		return err
	})
	return parent, sess, both && err == nil, err
}

// rotate runs once per token at a time (singleflight).
func (i *Issuer) rotate(ctx context.Context, token, hash string, c Client) (issuedPair, error) {
	now := i.now()
	// A parent this replica remembers: one session read instead of the
	// token read, the signature and the store's write.
	if p, ok, err := i.replayRecent(ctx, token, hash, now, c); err != nil || ok {
		return p, err
	}
	// A token this replica issued: minted from the session as it was then,
	// decided and checked current in one store call.
	if p, ok, err := i.rotateFromSnapshot(ctx, token, hash, now, c); err != nil || ok {
		return p, err
	}
	// Over the IP limit, only a replay may pass: a parent rotated inside the
	// grace window (by another replica, or before this replica's LRU
	// evicted it). Telling one apart takes the token read below, which the
	// budget's own store call overlaps.
	ipWaitDone := i.ipLimit.waitAsync(ctx, c.IP)
	parent, sess, read, err := i.readParent(ctx, hash)
	ipWait := ipWaitDone()
	limited := func() error {
		i.metrics.rateLimited.WithLabelValues("ip").Inc()
		return rateLimited("ip", ipWait)
	}
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return issuedPair{}, unavailable("get_token", err)
	case ipWait > 0 && (parent.RotatedAt.IsZero() || !now.Before(parent.RotatedAt.Add(i.cfg.ReuseGrace))):
		return issuedPair{}, limited()
	case err != nil:
		return issuedPair{}, i.refused(ctx, c, "", "unknown")
	}
	if read && sess.ID == "" {
		err = store.ErrNotFound
	} else if !read {
		err = i.call(ctx, "get_session", func(ctx context.Context) (err error) { sess, err = i.store.GetSession(ctx, parent.SessionID); return })
	}
	if errors.Is(err, store.ErrNotFound) {
		return issuedPair{}, i.refused(ctx, c, "", "unknown")
	} else if err != nil {
		return issuedPair{}, unavailable("get_session", err)
	}
	// A bound session's key never changes, so a request without it can
	// only be refused (the store decides it below, atomically): it mints
	// nothing and neither checks nor spends the session's budget, so a
	// thief holding the refresh token cannot rate-limit its owner.
	keyOK := sess.JKT == "" || sess.JKT == c.JKT
	if parent.RotatedAt.IsZero() && keyOK {
		// Only a would-be rotation spends the session's budget; a rotated
		// parent is a replay or reuse, which the store decides below.
		if wait := i.sidLim.wait(ctx, sess.ID); wait > 0 {
			i.metrics.rateLimited.WithLabelValues("session").Inc()
			return issuedPair{}, rateLimited("session", wait)
		}
	}
	req := store.RotateRequest{ParentHash: hash, Now: now, Grace: i.cfg.ReuseGrace, RevokeUntil: i.revokeUntil(now), JKT: c.JKT}
	// This replica's own rotation whose answer was lost (unacked.go):
	// decided as of that attempt, so it replays instead of being reuse.
	ownSealed, own := i.unacked.match(hash, parent)
	if own {
		req.Now = parent.RotatedAt
	}
	// A rotated parent or a revoked session can never rotate again (both
	// states are final), so the child is minted — a signature, the
	// costliest step — only when the store may actually rotate.
	var issued issuedPair
	mayRotate := parent.RotatedAt.IsZero() && sess.RevokedAt.IsZero() && keyOK
	if mayRotate {
		child, childHash := newRefreshToken()
		childExp := minTime(now.Add(sess.IdleTTL), sess.ExpiresAt)
		// The request's key: the session's own, or the key this rotation
		// binds an unbound session to.
		if issued, err = i.mint(sess, child, childExp, now, binding{jkt: c.JKT, ip: i.boundIP(c.IP)}); err != nil {
			return issuedPair{}, err
		}
		if req.Sealed, err = seal(token, hash, issued); err != nil {
			return issuedPair{}, err
		}
		req.Child = store.Token{Hash: childHash, IssuedAt: now, ExpiresAt: childExp}
	}
	var res store.RotateResult
	err = i.call(ctx, "rotate", func(ctx context.Context) (err error) { res, err = i.store.Rotate(ctx, req); return })
	return i.settle(ctx, token, hash, c, now, req, res, err, issued, mayRotate, own, ownSealed)
}

// rotateFromSnapshot rotates a token this replica issued and still has the
// session snapshot of (snapshots.go) with one store call: the child is
// minted from the snapshot, and the store's decision checks in the same
// step that the session is still at the snapshot's generation with the
// same claims (store.SnapshotRotator). ok is false, and the caller rotates
// the ordinary way, whenever anything needs the records first: no
// snapshot, a request without the session's key, a lost earlier attempt
// (unacked), a rate limit that would refuse, or a stale snapshot (claims
// patched or the session moved on, possibly on another replica). Every
// other outcome is the store's, handled exactly as after Rotate.
func (i *Issuer) rotateFromSnapshot(ctx context.Context, token, hash string, now time.Time, c Client) (issuedPair, bool, error) {
	snap, ok := i.snaps.peek(hash)
	if !ok || (snap.jkt != "" && snap.jkt != c.JKT) || i.unacked.lru.Contains(hash) {
		return issuedPair{}, false, nil
	}
	// The limits as the ordinary path applies them to a rotation; one that
	// would refuse is left to it (a rotated parent, which only the records
	// show, passes the IP limit as a replay).
	ipWaitDone := i.ipLimit.waitAsync(ctx, c.IP)
	sidWait := i.sidLim.wait(ctx, snap.sid)
	if ipWaitDone() > 0 || sidWait > 0 {
		return issuedPair{}, false, nil
	}
	i.snaps.remove(hash)
	sess := snap.session()
	child, childHash := newRefreshToken()
	childExp := minTime(now.Add(sess.IdleTTL), sess.ExpiresAt)
	issued, err := i.mint(sess, child, childExp, now, binding{jkt: c.JKT, ip: i.boundIP(c.IP)})
	if err != nil {
		return issuedPair{}, false, err
	}
	req := store.RotateRequest{ParentHash: hash, Now: now, Grace: i.cfg.ReuseGrace, RevokeUntil: i.revokeUntil(now), JKT: c.JKT,
		Child: store.Token{Hash: childHash, IssuedAt: now, ExpiresAt: childExp}}
	if req.Sealed, err = seal(token, hash, issued); err != nil {
		return issuedPair{}, false, err
	}
	want := store.Snapshot{Session: sess}
	var res store.RotateResult
	err = i.call(ctx, "rotate", func(ctx context.Context) (err error) { res, err = i.fast.RotateIfCurrent(ctx, req, want); return })
	if errors.Is(err, store.ErrStale) {
		return issuedPair{}, false, nil
	}
	p, err := i.settle(ctx, token, hash, c, now, req, res, err, issued, true, false, nil)
	return p, true, err
}

// settle answers the store's rotation decision res (or its failure err)
// for req, made at now; issued is the pair minted for it when mayRotate,
// and own says req is the retry of this replica's lost attempt, whose
// pair is ownSealed.
func (i *Issuer) settle(ctx context.Context, token, hash string, c Client, now time.Time, req store.RotateRequest,
	res store.RotateResult, err error, issued issuedPair, mayRotate, own bool, ownSealed []byte) (issuedPair, error) {
	if err != nil {
		if mayRotate {
			i.unacked.add(hash, req.Child.Hash, req.Sealed)
		}
		return issuedPair{}, unavailable("rotate", err)
	}
	if res.Outcome != store.KeyMismatch {
		// A request without the session's key learns nothing and must not
		// drop what this replica keeps for the key's holder.
		i.unacked.remove(hash)
	}
	if res.Outcome == store.Rotated && !mayRotate {
		return issuedPair{}, unavailable("rotate", fmt.Errorf("store rotated a token it reported as rotated or revoked"))
	}
	switch res.Outcome {
	case store.Rotated:
		childHash := req.Child.Hash
		countBoth(ctx, i.ipLimit, c.IP, i.sidLim, res.Session.ID)
		i.metrics.rotations.Inc()
		i.recent.add(hash, recentEntry{sid: res.Session.ID, generation: res.Parent.Generation, childHash: childHash, rotatedAt: now, sealed: req.Sealed})
		i.snaps.add(childHash, res.Session)
		i.log.InfoContext(ctx, "refresh token rotated", "sid", res.Session.ID, "sub", res.Session.Subject,
			"generation", res.Parent.Generation+1, "jti", issued.JTI)
		traceAttr(ctx, i.tracer != nil, attrOutcome, "rotated")
		return issued, nil
	case store.Replayed:
		sealed, rotatedAt := res.Sealed, res.Parent.RotatedAt
		if own {
			// Delivered only now: its grace window starts now.
			sealed, rotatedAt = ownSealed, now
		}
		p, err := unseal(token, hash, sealed)
		if err != nil {
			// The sealed pair is gone or unreadable (e.g. replicas with
			// different grace settings): the child cannot be handed out.
			return issuedPair{}, i.refused(ctx, c, res.Session.ID, "replay_unavailable")
		}
		i.metrics.replays.WithLabelValues("store").Inc()
		traceAttr(ctx, i.tracer != nil, attrOutcome, "replayed")
		i.recent.add(hash, recentEntry{sid: res.Session.ID, generation: res.Parent.Generation, childHash: res.Parent.ChildHash,
			rotatedAt: rotatedAt, sealed: sealed})
		return p, nil
	case store.ReuseDetected:
		i.recent.forgetSession(res.Session.ID)
		i.snaps.forgetSession(res.Session.ID)
		i.metrics.reuse.Inc()
		i.metrics.revocations.WithLabelValues("reuse_detected").Inc()
		i.log.WarnContext(ctx, "refresh token reuse detected", "sid", res.Session.ID, "sub", res.Session.Subject,
			"generation", res.Parent.Generation, "current_generation", res.Session.Generation,
			"client_ip", c.IP, "user_agent", c.UserAgent)
		return issuedPair{}, i.refused(ctx, c, res.Session.ID, "reuse_detected")
	case store.Expired:
		return issuedPair{}, i.refused(ctx, c, res.Session.ID, "expired")
	case store.Revoked:
		return issuedPair{}, i.refused(ctx, c, res.Session.ID, "revoked")
	case store.KeyMismatch:
		return issuedPair{}, i.keyMismatch(ctx, c, res.Session)
	}
	return issuedPair{}, i.refused(ctx, c, res.Session.ID, "unknown")
}

var grantDescriptions = map[string]string{
	"unknown":            "refresh token unknown",
	"expired":            "refresh token or session expired",
	"revoked":            "session revoked",
	"reuse_detected":     "refresh token reuse detected; the session is revoked",
	"replay_unavailable": "refresh token already used",
	"dpop_key_mismatch":  "the session is bound to a DPoP key; a proof signed with it is required",
}

// keyMismatch refuses a refresh of a session bound to another DPoP key
// (or made without a proof). It counts against the client IP's budget only:
// the session's budget belongs to the holder of its key.
func (i *Issuer) keyMismatch(ctx context.Context, c Client, sess store.Session) error {
	i.ipLimit.count(ctx, c.IP)
	i.metrics.failures.WithLabelValues("dpop_key_mismatch").Inc()
	i.log.WarnContext(ctx, "refresh without the session's dpop key refused", "sid", sess.ID, "sub", sess.Subject,
		"proof", c.JKT != "", "client_ip", c.IP, "user_agent", c.UserAgent)
	return invalidGrant("dpop_key_mismatch", grantDescriptions["dpop_key_mismatch"])
}

// ProofRefused counts a refused DPoP proof at the token endpoint against
// the client IP's budget, like any failed attempt, and returns the answer:
// e itself, or 429 once the budget is spent. A nonce challenge
// (use_dpop_nonce) is part of the normal flow and spends nothing.
func (i *Issuer) ProofRefused(ctx context.Context, c Client, e *Error) error {
	i.metrics.failures.WithLabelValues(e.Reason).Inc()
	i.log.DebugContext(ctx, "refresh refused", "reason", e.Reason, "client_ip", c.IP)
	if e.Code == "use_dpop_nonce" {
		return e
	}
	if wait := i.ipLimit.wait(ctx, c.IP); wait > 0 {
		i.metrics.rateLimited.WithLabelValues("ip").Inc()
		return rateLimited("ip", wait)
	}
	i.ipLimit.count(ctx, c.IP)
	return e
}

// refused counts a failed attempt against the limits and answers invalid_grant.
func (i *Issuer) refused(ctx context.Context, c Client, sid, reason string) error {
	countBoth(ctx, i.ipLimit, c.IP, i.sidLim, sid)
	i.metrics.failures.WithLabelValues(reason).Inc()
	i.log.Debug("refresh refused", "reason", reason, "sid", sid, "client_ip", c.IP)
	return invalidGrant(reason, grantDescriptions[reason])
}

// revokeUntil is when every access token issued up to now has expired.
func (i *Issuer) revokeUntil(now time.Time) time.Time { return now.Add(i.cfg.AccessTTL) }

// RevokeToken signs out the session of a refresh token (RFC 7009). Unknown
// or malformed tokens are not an error: the answer is the same either way.
// Every attempt spends the client IP's budget (shared with Refresh): each
// well-formed token costs a store read, so a flood of guessed tokens is
// answered 429 before it reaches the store.
func (i *Issuer) RevokeToken(ctx context.Context, token string, c Client) error {
	if wait := i.ipLimit.wait(ctx, c.IP); wait > 0 {
		i.metrics.rateLimited.WithLabelValues("ip").Inc()
		return rateLimited("ip", wait)
	}
	i.ipLimit.count(ctx, c.IP)
	if !wellFormed(token) {
		return nil
	}
	var t store.Token
	err := i.call(ctx, "get_token", func(ctx context.Context) (err error) { t, err = i.store.GetToken(ctx, hashToken(token)); return })
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return unavailable("get_token", err)
	}
	_, err = i.revokeSession(ctx, t.SessionID, "sign_out")
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// RevokeSession revokes one session (admin sign-out). It reports whether
// this call revoked it; a *Error with 404 if the session does not exist.
func (i *Issuer) RevokeSession(ctx context.Context, sid string) (bool, error) {
	ok, err := i.revokeSession(ctx, sid, "admin")
	if errors.Is(err, store.ErrNotFound) {
		return false, notFound("session " + sid + " not found")
	}
	return ok, err
}

func (i *Issuer) revokeSession(ctx context.Context, sid, reason string) (bool, error) {
	now := i.now()
	var revoked bool
	err := i.call(ctx, "revoke_session", func(ctx context.Context) (err error) {
		revoked, err = i.store.RevokeSession(ctx, sid, now, i.revokeUntil(now))
		return
	})
	if errors.Is(err, store.ErrNotFound) {
		return false, err
	} else if err != nil {
		return false, unavailable("revoke_session", err)
	}
	i.recent.forgetSession(sid)
	i.snaps.forgetSession(sid)
	if revoked {
		i.metrics.revocations.WithLabelValues(reason).Inc()
		i.log.InfoContext(ctx, "session revoked", "sid", sid, "reason", reason)
	}
	return revoked, nil
}

// RevokeSubject signs a subject out everywhere and returns the revoked sids.
func (i *Issuer) RevokeSubject(ctx context.Context, sub string) ([]string, error) {
	now := i.now()
	var ids []string
	err := i.call(ctx, "revoke_subject", func(ctx context.Context) (err error) {
		ids, err = i.store.RevokeSubject(ctx, sub, now, i.revokeUntil(now))
		return
	})
	if err != nil {
		return nil, unavailable("revoke_subject", err)
	}
	for _, sid := range ids {
		i.recent.forgetSession(sid)
		i.snaps.forgetSession(sid)
	}
	i.metrics.revocations.WithLabelValues("subject").Add(float64(len(ids)))
	i.log.InfoContext(ctx, "subject revoked", "sub", sub, "sessions", len(ids))
	return ids, nil
}

// PatchClaims replaces a session's custom claims; the next refresh carries
// them. Pairs already issued (and replays of them) keep the old claims.
func (i *Issuer) PatchClaims(ctx context.Context, sid string, raw json.RawMessage) (store.Session, error) {
	claims, err := checkClaims(raw)
	if err != nil {
		return store.Session{}, err
	}
	now := i.now()
	var s store.Session
	err = i.call(ctx, "patch_claims", func(ctx context.Context) (err error) { s, err = i.store.PatchClaims(ctx, sid, claims, now); return })
	if errors.Is(err, store.ErrNotFound) {
		return store.Session{}, notFound("session " + sid + " not found or no longer active")
	} else if err != nil {
		return store.Session{}, unavailable("patch_claims", err)
	}
	i.log.InfoContext(ctx, "session claims replaced", "sid", sid)
	return s, nil
}
