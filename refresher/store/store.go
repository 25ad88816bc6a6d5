// Package store defines what the refresher keeps: sessions (token families),
// refresh-token records (by SHA-256 only, never the token), the sealed pair
// each rotation issued (kept for the grace window so any replica can replay
// it), and the feed of revoked sessions. Backends live beside it (memstore,
// boltstore, redisstore) and all pass the storetest conformance suite.
//
// Every decision that two replicas could race on is one atomic call: Rotate
// decides rotate / replay / reuse / invalid in one step. Time is always passed
// in by the caller (the issuer's clock), so tests drive it with a fake clock
// and replicas agree on "now" as well as their clocks do.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned when a session or token does not exist. Any other
// error from a Store means the store could not answer (unreachable, timed
// out, corrupt): the refresher answers 503, never invalid_grant.
var ErrNotFound = errors.New("not found")

// ErrExists is returned by CreateSession when the session ID or the first
// token hash is already taken.
var ErrExists = errors.New("already exists")

// Session is one sign-in: a family of refresh tokens sharing a sid.
type Session struct {
	ID      string
	Subject string
	// Claims are the custom claims copied into every access token of the
	// session (a JSON object). PatchClaims replaces them.
	Claims    json.RawMessage
	CreatedAt time.Time
	// IdleTTL is how long a refresh token lives unused; each rotation slides it.
	IdleTTL time.Duration
	// ExpiresAt is the absolute end of the session (session-max-age); no
	// refresh token outlives it.
	ExpiresAt time.Time
	// RevokedAt is zero while the session is active.
	RevokedAt time.Time
	// Generation counts rotations: the first token is generation 0.
	Generation uint64
	// JKT is the RFC 7638 thumbprint of the DPoP key the session is bound
	// to ("" while unbound). Once set it never changes: every refresh must
	// come with a proof signed by that key (Rotate refuses any other with
	// KeyMismatch), and every access token carries it as cnf.jkt.
	JKT string
	// Device is base64url (no padding) of the SHA-256 of the device
	// identifier given at sign-in ("" for none); every access token
	// carries it as cnf.dev. The identifier itself is never stored.
	Device string
}

// Active reports whether the session can still be refreshed at now.
func (s Session) Active(now time.Time) bool {
	return s.RevokedAt.IsZero() && now.Before(s.ExpiresAt)
}

// Token is the stored record of one refresh token.
type Token struct {
	// Hash is the SHA-256 of the refresh token string, hex-encoded.
	Hash       string
	SessionID  string
	Generation uint64
	IssuedAt   time.Time
	// ExpiresAt is the idle expiry: min(IssuedAt+IdleTTL, session.ExpiresAt).
	ExpiresAt time.Time
	// RotatedAt is zero until the token is rotated.
	RotatedAt time.Time
	// ChildHash is the hash of the token this one rotated into.
	ChildHash string
}

// Outcome is what Rotate decided.
type Outcome int

const (
	// Rotated: the parent was active; it is now marked rotated and the child stored.
	Rotated Outcome = iota + 1
	// Replayed: the parent was rotated less than Grace ago into the session's
	// current token; Sealed holds the pair that rotation issued.
	Replayed
	// ReuseDetected: a rotated token was presented outside the grace window,
	// or an older generation; the session is now revoked.
	ReuseDetected
	// Unknown: no such token.
	Unknown
	// Expired: the token or the session has expired.
	Expired
	// Revoked: the session was already revoked.
	Revoked
	// KeyMismatch: the session is bound to a DPoP key (Session.JKT) and the
	// request proved another key or none. Nothing changed: no rotation, no
	// replay, no revocation (a party without the key can neither use nor
	// revoke the session).
	KeyMismatch
)

func (o Outcome) String() string {
	switch o {
	case Rotated:
		return "rotated"
	case Replayed:
		return "replayed"
	case ReuseDetected:
		return "reuse_detected"
	case Unknown:
		return "unknown"
	case Expired:
		return "expired"
	case Revoked:
		return "revoked"
	case KeyMismatch:
		return "key_mismatch"
	}
	return "invalid_outcome"
}

// RotateRequest is one refresh attempt, prepared by the issuer before it asks
// the store: the child token is already minted, so the store's decision and
// the write happen in one atomic step.
type RotateRequest struct {
	ParentHash string
	// Child is stored only if the outcome is Rotated. Its SessionID and
	// Generation are set by the store from the parent.
	Child Token
	// Sealed is the issued pair, encrypted under a key derived from the parent
	// token; stored with the parent for Grace so another replica can replay it.
	Sealed []byte
	Now    time.Time
	// Grace is the reuse-grace window.
	Grace time.Duration
	// RevokeUntil is used if reuse is detected: the revocation feed entry's
	// until (Now + the longest access-token lifetime).
	RevokeUntil time.Time
	// JKT is the thumbprint of the DPoP key the request proved it holds (""
	// for a request without a valid proof). A bound session refuses any
	// other value (KeyMismatch); an unbound session is bound to it by the
	// rotation itself (Rotated), in the same atomic step.
	JKT string
}

// RotateResult is the store's decision.
type RotateResult struct {
	Outcome Outcome
	// Session is the session after the decision (revoked if reuse was detected).
	// Zero for Unknown.
	Session Session
	// Parent is the presented token's record (zero for Unknown).
	Parent Token
	// Sealed is the pair to replay, for Replayed.
	Sealed []byte
}

// Revocation is one entry of the revocation feed.
type Revocation struct {
	SessionID string
	Subject   string
	// Until is when every access token of the session has expired; the entry
	// leaves the feed after it.
	Until time.Time
}

// Pruner is the optional interface of a backend that must delete dead
// records itself: memory and bolt keep every record until something
// removes it, while Redis gives each key an expiry and does not implement
// it. The refresher calls Prune every few seconds while it runs
// (refresher.Server.RunPruner), so the store stays bounded.
type Pruner interface {
	// Prune deletes what can no longer matter at now: feed entries past
	// their Until and sessions expired at now (absolute expiry) with all
	// their tokens, and whatever else the backend keeps past its use (bolt:
	// sealed pairs past their grace window). Token records of live sessions
	// stay, rotated or not: an old generation must still be recognised as
	// reuse (see Store.Rotate). It must be safe to call concurrently with
	// every Store method.
	Prune(now time.Time) error
}

// TokenSessionGetter is the optional interface of a backend that reads a
// refresh token and its session together cheaper than one after the other
// (Redis: one round trip instead of two). The refresher's rotation uses it
// when the backend has it.
type TokenSessionGetter interface {
	// GetTokenSession returns what GetToken(hash) and then GetSession of the
	// token's SessionID would: ErrNotFound when the token is unknown; a
	// known token whose session does not exist comes with the zero Session
	// (ID "") and a nil error.
	GetTokenSession(ctx context.Context, hash string) (Token, Session, error)
}

// ErrStale is returned by a SnapshotRotator when the rotation would have
// taken place but the session is no longer what the caller's snapshot
// says: nothing was written, and the caller rotates the ordinary way
// (read, mint, Rotate).
var ErrStale = errors.New("session changed since the snapshot")

// Snapshot is what an issuer remembers of a session from the moment it
// issued a refresh token: what the next access token of the session is
// minted from, and what a speculative rotation checks is still current.
type Snapshot struct {
	// Session is the session the presented token belongs to, as it was
	// when the token was issued. Its Generation (the token's own) and
	// Claims (what the child was minted with, compared byte for byte) are
	// what must still be current; the rest does not change while a
	// session lives, except JKT, which only a rotation sets (and so moves
	// the generation on).
	Session Session
}

// SnapshotRotator is the optional interface of a backend that can decide
// a rotation whose child was minted from a snapshot of the session in the
// same step that checks the snapshot is current (Redis: one script call,
// one round trip, instead of a read before the mint). The issuer uses it
// for a token it issued itself and still remembers.
type SnapshotRotator interface {
	// RotateIfCurrent is Rotate of req for a parent of session
	// want.Session.ID (a parent of no such session is Unknown), except
	// that where Rotate would rotate, it first checks the session's
	// generation and claims are want's: if not, it writes nothing and
	// returns ErrStale. Every other outcome (replay, reuse, revoked,
	// expired, key mismatch, unknown) is exactly Rotate's, with the same
	// writes and answer. For Rotated the answer's Session is want.Session
	// as the rotation left it (one generation on, bound to req.JKT if it
	// was unbound), which the store need not read back.
	RotateIfCurrent(ctx context.Context, req RotateRequest, want Snapshot) (RotateResult, error)
}

// RateLimiterProvider is the optional interface of a backend shared by
// several replicas (Redis): rate limits kept in it hold across them, so N
// replicas allow the limit once, not N times. Backends of one process
// (memory, bolt) do not implement it and the refresher limits in process.
type RateLimiterProvider interface {
	// RateLimiter returns the limit named name (e.g. "ip", "session"):
	// perSecond counted attempts a second per key, burst at once.
	RateLimiter(name string, perSecond float64, burst int) RateLimiter
}

// RateLimiter is a rate limit per key (a client IP, a session id). It has
// two steps because the refresher checks a budget before the work and
// spends it only for what abuse produces (a rotation, a failed attempt):
// a replay is checked against nothing and spends nothing.
type RateLimiter interface {
	// Wait is how long until key may make one counted attempt: zero when it
	// may now. It spends nothing.
	Wait(ctx context.Context, key string) (time.Duration, error)
	// Spend spends one attempt of key's budget (nothing when none is left).
	Spend(ctx context.Context, key string) error
}

// Store is what the refresher needs from a backend. Implementations must be
// safe for concurrent use and must make Rotate, RevokeSession and
// RevokeSubject atomic, including across processes for shared backends.
type Store interface {
	// CreateSession stores a new session and its first refresh token.
	CreateSession(ctx context.Context, s Session, first Token) error
	// GetSession returns a session by ID, or ErrNotFound.
	GetSession(ctx context.Context, sid string) (Session, error)
	// GetToken returns a refresh-token record by hash, or ErrNotFound.
	GetToken(ctx context.Context, hash string) (Token, error)
	// Rotate decides and applies one refresh atomically. The decision, in
	// this order (P = the token with ParentHash, S = its session):
	//   1. P unknown                                   → Unknown
	//   2. S revoked                                   → Revoked
	//   3. S expired (Now ≥ S.ExpiresAt)               → Expired
	//   3a. S bound (S.JKT ≠ "") and JKT ≠ S.JKT        → KeyMismatch: nothing
	//      written (no replay, no reuse detection, no revocation)
	//   4. P rotated, Now < P.RotatedAt+Grace, and P.ChildHash is S's
	//      current (newest, unrotated) token            → Replayed (Sealed = P's sealed pair)
	//   5. P rotated otherwise (after the grace window, or an older
	//      generation)                                 → ReuseDetected: S revoked at Now,
	//      feed entry with RevokeUntil appended
	//   6. P expired (Now ≥ P.ExpiresAt)               → Expired
	//   7. otherwise                                   → Rotated: P.RotatedAt=Now,
	//      P.ChildHash=Child.Hash, Sealed kept with P for Grace, Child stored
	//      with SessionID=S.ID and Generation=P.Generation+1, S.Generation
	//      incremented, and S.JKT set to JKT if S was unbound and JKT ≠ ""
	//      (the key a session is bound to is fixed by the rotation that
	//      bound it; a replay never binds).
	// The child's ExpiresAt is set by the issuer (idle TTL slid, capped at
	// S.ExpiresAt); the store does not slide it again. Token records live as
	// long as their session could, so an old generation is still recognised
	// (and revokes the session) until the session itself has expired.
	//
	// A backend whose call can still take effect after the caller gave up
	// (Redis: a script queued behind a stalled server) must not apply a
	// rotation later than ctx's deadline: the caller has answered 503 by
	// then, and a rotation nobody received would turn the client's retry
	// into reuse. It returns an error instead, so the retry is decided
	// afresh.
	Rotate(ctx context.Context, req RotateRequest) (RotateResult, error)
	// PatchClaims replaces a session's custom claims; ErrNotFound if the
	// session does not exist or is no longer active at now.
	PatchClaims(ctx context.Context, sid string, claims json.RawMessage, now time.Time) (Session, error)
	// RevokeSession revokes a session and appends it to the revocation feed.
	// It reports whether this call revoked it (false if it was already
	// revoked); ErrNotFound if it does not exist.
	RevokeSession(ctx context.Context, sid string, now, until time.Time) (bool, error)
	// RevokeSubject revokes every active session of a subject and returns
	// their IDs.
	RevokeSubject(ctx context.Context, sub string, now, until time.Time) ([]string, error)
	// Revocations returns feed entries after cursor ("" = from the start of
	// what is retained) whose Until is after now, and the cursor to pass next
	// time. When there are none it waits up to wait (or until ctx ends) for
	// one to arrive, then returns what it has (possibly nothing, with the same
	// cursor). A cursor from another backend or a pruned position is not an
	// error: the backend returns everything it retains.
	Revocations(ctx context.Context, cursor string, now time.Time, wait time.Duration) ([]Revocation, string, error)
	// Ping checks the store answers (readiness).
	Ping(ctx context.Context) error
	// Close releases the backend.
	Close() error
}
