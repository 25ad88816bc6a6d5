// Package storetest is the conformance suite every store.Store backend
// passes: memory, bolt and Redis run the same Run from their own tests. It
// follows the Store interface's documentation, including every row of the
// Rotate decision table, and drives time only through the Now values it
// passes in (fixed times, never the wall clock), so a backend that used its
// own clock for a decision would fail here.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/refresher/store"
)

// Fixed times: the suite never reads the wall clock for a decision.
var (
	t0        = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	idleTTL   = time.Hour
	maxAge    = 24 * time.Hour
	grace     = 30 * time.Second
	accessTTL = 15 * time.Minute
)

// Run runs the conformance suite. open must return a fresh, empty store for
// each call (the revocation feed is compared exactly); Run closes it when the
// subtest ends. Subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"GetUnknown", testGetUnknown},
		{"CreateExistingSession", testCreateExistingSession},
		{"CreateExistingTokenHash", testCreateExistingTokenHash},
		{"RotateActive", testRotateActive},
		{"RotateChain", testRotateChain},
		{"ReplayWithinGrace", testReplayWithinGrace},
		{"ReplayAtGraceEndIsReuse", testReplayAtGraceEnd},
		{"ReplayOnlyForImmediateParent", testReplayOnlyImmediateParent},
		{"ReuseAfterGrace", testReuseAfterGrace},
		{"ReuseThenChildIsRevoked", testReuseThenChildRevoked},
		{"ExpiredToken", testExpiredToken},
		{"ExpiredSession", testExpiredSession},
		{"ExpiredSessionWinsOverReuse", testExpiredSessionBeforeReuse},
		{"RevokedSession", testRevokedSession},
		{"RevokedWinsOverReuse", testRevokedBeforeReuse},
		{"UnknownToken", testUnknownToken},
		{"ConcurrentRotate", testConcurrentRotate},
		{"PatchClaims", testPatchClaims},
		{"PatchClaimsInactive", testPatchClaimsInactive},
		{"RevokeSessionIdempotent", testRevokeSessionIdempotent},
		{"RevokeSessionUnknown", testRevokeSessionUnknown},
		{"RevokeSubject", testRevokeSubject},
		{"RevocationsEmpty", testRevocationsEmpty},
		{"RevocationsCursor", testRevocationsCursor},
		{"RevocationsDropsPastUntil", testRevocationsDropsPastUntil},
		{"RevocationsForeignCursor", testRevocationsForeignCursor},
		{"RevocationsWaitWakes", testRevocationsWaitWakes},
		{"RevocationsWaitTimesOut", testRevocationsWaitTimesOut},
		{"RevocationsWaitCancelled", testRevocationsWaitCancelled},
		{"Ping", testPing},
		{"CreateBound", testCreateBound},
		{"BoundRotateSameKey", testBoundRotateSameKey},
		{"BoundRotateOtherKey", testBoundRotateOtherKey},
		{"BoundReplayOtherKey", testBoundReplayOtherKey},
		{"BoundReuseOtherKeyDoesNotRevoke", testBoundReuseOtherKey},
		{"BoundRevokedAndExpired", testBoundRevokedAndExpired},
		{"UnboundBindsOnRotate", testUnboundBindsOnRotate},
		{"UnboundStaysUnbound", testUnboundStaysUnbound},
		{"ConcurrentBoundRotate", testConcurrentBoundRotate},
		{"GetTokenSession", testGetTokenSession},
		{"SnapshotRotateCurrent", testSnapshotRotateCurrent},
		{"SnapshotStaleClaims", testSnapshotStaleClaims},
		{"SnapshotStaleGeneration", testSnapshotStaleGeneration},
		{"SnapshotDecisions", testSnapshotDecisions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// fixture is one session with its first token, created in the store.
type fixture struct {
	session store.Session
	first   store.Token
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newHash returns the hex SHA-256 of a fresh random token, as the issuer
// computes it.
func newHash(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte(randomHex(t, 32)))
	return hex.EncodeToString(sum[:])
}

func newSession(t *testing.T, sub string, created time.Time) (store.Session, store.Token) {
	t.Helper()
	s := store.Session{
		ID:        randomHex(t, 16),
		Subject:   sub,
		Claims:    json.RawMessage(`{"name":"Ada","roles":["admin","dev"]}`),
		CreatedAt: created,
		IdleTTL:   idleTTL,
		ExpiresAt: created.Add(maxAge),
	}
	tok := store.Token{
		Hash:      newHash(t),
		SessionID: s.ID,
		IssuedAt:  created,
		ExpiresAt: created.Add(idleTTL),
	}
	return s, tok
}

func create(t *testing.T, s store.Store, sub string) fixture {
	t.Helper()
	sess, tok := newSession(t, sub, t0)
	if err := s.CreateSession(context.Background(), sess, tok); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return fixture{session: sess, first: tok}
}

// rotateReq builds the request the issuer would send for parent at now: a
// freshly minted child whose idle expiry slides from now.
func rotateReq(t *testing.T, parent string, now time.Time) store.RotateRequest {
	t.Helper()
	return store.RotateRequest{
		ParentHash: parent,
		Child: store.Token{
			Hash:      newHash(t),
			IssuedAt:  now,
			ExpiresAt: now.Add(idleTTL),
		},
		Sealed:      []byte("sealed-pair-" + randomHex(t, 8)),
		Now:         now,
		Grace:       grace,
		RevokeUntil: now.Add(accessTTL),
	}
}

func rotate(t *testing.T, s store.Store, req store.RotateRequest) store.RotateResult {
	t.Helper()
	res, err := s.Rotate(context.Background(), req)
	if err != nil {
		t.Fatalf("Rotate(%s at %v): %v", short(req.ParentHash), req.Now, err)
	}
	return res
}

// mustRotate rotates parent at now and requires the outcome Rotated.
func mustRotate(t *testing.T, s store.Store, parent string, now time.Time) store.RotateRequest {
	t.Helper()
	req := rotateReq(t, parent, now)
	if res := rotate(t, s, req); res.Outcome != store.Rotated {
		t.Fatalf("Rotate at %v: outcome %v, want rotated", now, res.Outcome)
	}
	return req
}

func short(h string) string {
	if len(h) > 8 {
		return h[:8]
	}
	return h
}

// cmpOpts compares JSON claims by meaning (a backend may re-encode them) and
// times by instant (cmp uses time.Time's Equal method).
var cmpOpts = cmp.Options{
	cmp.Transformer("json", func(m json.RawMessage) any {
		if len(m) == 0 {
			return nil
		}
		var v any
		if err := json.Unmarshal(m, &v); err != nil {
			return "invalid JSON: " + string(m)
		}
		return v
	}),
}

func getSession(t *testing.T, s store.Store, sid string) store.Session {
	t.Helper()
	got, err := s.GetSession(context.Background(), sid)
	if err != nil {
		t.Fatalf("GetSession(%s): %v", sid, err)
	}
	return got
}

func getToken(t *testing.T, s store.Store, hash string) store.Token {
	t.Helper()
	got, err := s.GetToken(context.Background(), hash)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", short(hash), err)
	}
	return got
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: error %v, want store.ErrNotFound", what, err)
	}
}

// feed reads the whole retained feed at now without waiting.
func feed(t *testing.T, s store.Store, now time.Time) []store.Revocation {
	t.Helper()
	got, _, err := s.Revocations(context.Background(), "", now, 0)
	if err != nil {
		t.Fatalf("Revocations: %v", err)
	}
	return got
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

func testCreateAndGet(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	diff(t, "GetSession", f.session, getSession(t, s, f.session.ID))
	diff(t, "GetToken", f.first, getToken(t, s, f.first.Hash))
	if !f.session.Active(t0) {
		t.Fatal("fixture session should be active")
	}
}

func testGetUnknown(t *testing.T, s store.Store) {
	create(t, s, "user-1")
	_, err := s.GetSession(context.Background(), randomHex(t, 16))
	wantNotFound(t, "GetSession(unknown)", err)
	_, err = s.GetToken(context.Background(), newHash(t))
	wantNotFound(t, "GetToken(unknown)", err)
}

func testCreateExistingSession(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	other, tok := newSession(t, "user-2", t0.Add(time.Minute))
	other.ID = f.session.ID
	tok.SessionID = f.session.ID
	err := s.CreateSession(context.Background(), other, tok)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateSession(same sid): error %v, want store.ErrExists", err)
	}
	// Nothing half written: the original is intact, the new token absent.
	diff(t, "session after refused create", f.session, getSession(t, s, f.session.ID))
	_, err = s.GetToken(context.Background(), tok.Hash)
	wantNotFound(t, "GetToken(token of refused create)", err)
}

func testCreateExistingTokenHash(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	other, tok := newSession(t, "user-2", t0)
	tok.Hash = f.first.Hash
	err := s.CreateSession(context.Background(), other, tok)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateSession(same token hash): error %v, want store.ErrExists", err)
	}
	_, err = s.GetSession(context.Background(), other.ID)
	wantNotFound(t, "GetSession(session of refused create)", err)
	diff(t, "first token after refused create", f.first, getToken(t, s, f.first.Hash))
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
