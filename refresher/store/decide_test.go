package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/refresher/store"
)

// Apply returns, for every row of the decision table, the answer and
// exactly the records that outcome writes; nothing for the outcomes that
// change nothing.
func TestApply(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const grace = 30 * time.Second
	sess := store.Session{ID: "s1", Subject: "alice", Claims: []byte(`{"role":"x"}`), CreatedAt: t0,
		IdleTTL: time.Hour, ExpiresAt: t0.Add(24 * time.Hour), Generation: 1}
	// current is the session's current token (generation 1); rotated is its
	// parent, rotated at t0 into current.
	current := store.Token{Hash: "h1", SessionID: "s1", Generation: 1, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	rotated := store.Token{Hash: "h0", SessionID: "s1", Generation: 0, IssuedAt: t0.Add(-time.Hour),
		ExpiresAt: t0, RotatedAt: t0, ChildHash: "h1"}
	req := func(now time.Time) store.RotateRequest {
		return store.RotateRequest{ParentHash: "", Child: store.Token{Hash: "h2", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
			Sealed: []byte("sealed pair"), Now: now, Grace: grace, RevokeUntil: now.Add(15 * time.Minute)}
	}
	revoked := sess
	revoked.RevokedAt = t0.Add(-time.Minute)
	at := t0.Add(10 * time.Second)

	// What the outcomes that write produce.
	revokedAt := func(s store.Session, t time.Time) store.Session { s.RevokedAt = t; return s }
	end := t0.Add(grace) // the first instant after the grace window
	reused, reusedOld := revokedAt(sess, end), revokedAt(sess, at)
	nextSess := sess
	nextSess.Generation = 2
	reusedOld.Generation = 2
	nextParent := current
	nextParent.RotatedAt, nextParent.ChildHash = at, "h2"
	child := store.Token{Hash: "h2", SessionID: "s1", Generation: 2, IssuedAt: at, ExpiresAt: at.Add(time.Hour)}

	tests := []struct {
		name   string
		p      store.Token
		s      store.Session
		req    store.RotateRequest
		res    store.RotateResult
		writes store.Writes
	}{
		{name: "revoked session", p: current, s: revoked, req: req(at),
			res: store.RotateResult{Outcome: store.Revoked, Session: revoked, Parent: current}},
		{name: "expired session", p: current, s: sess, req: req(sess.ExpiresAt),
			res: store.RotateResult{Outcome: store.Expired, Session: sess, Parent: current}},
		{name: "replay inside the grace window", p: rotated, s: sess, req: req(t0.Add(grace - time.Nanosecond)),
			res: store.RotateResult{Outcome: store.Replayed, Session: sess, Parent: rotated}},
		{name: "reuse at the end of the grace window", p: rotated, s: sess, req: req(end),
			res: store.RotateResult{Outcome: store.ReuseDetected, Session: reused, Parent: rotated},
			writes: store.Writes{Session: &reused,
				Revocation: &store.Revocation{SessionID: "s1", Subject: "alice", Until: end.Add(15 * time.Minute)}}},
		// The parent's child is no longer current (the session rotated on).
		{name: "reuse of an older generation inside the window", p: rotated, s: nextSess, req: req(at),
			res: store.RotateResult{Outcome: store.ReuseDetected, Session: reusedOld, Parent: rotated},
			writes: store.Writes{Session: &reusedOld,
				Revocation: &store.Revocation{SessionID: "s1", Subject: "alice", Until: at.Add(15 * time.Minute)}}},
		{name: "expired token", p: current, s: sess, req: req(current.ExpiresAt),
			res: store.RotateResult{Outcome: store.Expired, Session: sess, Parent: current}},
		{name: "rotate", p: current, s: sess, req: req(at),
			res: store.RotateResult{Outcome: store.Rotated, Session: nextSess, Parent: nextParent},
			writes: store.Writes{Session: &nextSess, Parent: &nextParent, Child: &child,
				Sealed: []byte("sealed pair"), SealedUntil: at.Add(grace)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The request's child carries a stale session and generation:
			// Apply sets them from the parent.
			tc.req.Child.SessionID, tc.req.Child.Generation = "other", 7
			p, s := tc.p, tc.s
			res, w := store.Apply(p, s, tc.req)
			if diff := cmp.Diff(tc.res, res); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.writes, w); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if !cmp.Equal(p, tc.p) || !cmp.Equal(s, tc.s) {
				t.Error("Apply changed its inputs")
			}
		})
	}
}
