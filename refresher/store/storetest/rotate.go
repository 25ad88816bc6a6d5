package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

// Each test below is one row (or one ordering rule) of the Rotate decision
// table in store.Store's documentation.

func testRotateActive(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	now := t0.Add(10 * time.Minute)
	req := rotateReq(t, f.first.Hash, now)
	res := rotate(t, s, req)
	if res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, want rotated", res.Outcome)
	}
	wantSession := f.session
	wantSession.Generation = 1
	wantParent := f.first
	wantParent.RotatedAt = now
	wantParent.ChildHash = req.Child.Hash
	wantChild := req.Child
	wantChild.SessionID = f.session.ID
	wantChild.Generation = 1

	diff(t, "result session", wantSession, res.Session)
	diff(t, "result parent", wantParent, res.Parent)
	if res.Sealed != nil {
		t.Errorf("result Sealed = %q for rotated, want nil", res.Sealed)
	}
	diff(t, "stored session", wantSession, getSession(t, s, f.session.ID))
	diff(t, "stored parent", wantParent, getToken(t, s, f.first.Hash))
	diff(t, "stored child", wantChild, getToken(t, s, req.Child.Hash))
	if got := feed(t, s, now); len(got) != 0 {
		t.Errorf("feed after a rotation = %v, want empty", got)
	}
}

// testRotateChain rotates several generations; each child is the next parent.
func testRotateChain(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	parent := f.first.Hash
	now := t0
	for gen := uint64(1); gen <= 5; gen++ {
		now = now.Add(time.Minute)
		req := mustRotate(t, s, parent, now)
		child := getToken(t, s, req.Child.Hash)
		if child.Generation != gen || child.SessionID != f.session.ID {
			t.Fatalf("child of generation %d: got generation %d, sid %q", gen, child.Generation, child.SessionID)
		}
		parent = req.Child.Hash
	}
	if got := getSession(t, s, f.session.ID).Generation; got != 5 {
		t.Errorf("session generation = %d, want 5", got)
	}
}

func testReplayWithinGrace(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	rotatedAt := t0.Add(10 * time.Minute)
	first := mustRotate(t, s, f.first.Hash, rotatedAt)

	for _, after := range []time.Duration{0, time.Second, grace - time.Millisecond} {
		t.Run(fmt.Sprint(after), func(t *testing.T) {
			req := rotateReq(t, f.first.Hash, rotatedAt.Add(after))
			res := rotate(t, s, req)
			if res.Outcome != store.Replayed {
				t.Fatalf("outcome %v, want replayed", res.Outcome)
			}
			if !bytes.Equal(res.Sealed, first.Sealed) {
				t.Errorf("Sealed = %q, want the first rotation's %q", res.Sealed, first.Sealed)
			}
			if res.Session.ID != f.session.ID || !res.Session.RevokedAt.IsZero() {
				t.Errorf("result session = %+v, want the active session %s", res.Session, f.session.ID)
			}
			if res.Parent.Hash != f.first.Hash || res.Parent.ChildHash != first.Child.Hash {
				t.Errorf("result parent = %+v, want the presented token rotated into %s", res.Parent, short(first.Child.Hash))
			}
			// A replay stores nothing: the request's child is discarded.
			_, err := s.GetToken(context.Background(), req.Child.Hash)
			wantNotFound(t, "GetToken(child of a replayed request)", err)
		})
	}
	sess := getSession(t, s, f.session.ID)
	if sess.Generation != 1 || !sess.RevokedAt.IsZero() {
		t.Errorf("session after replays: generation %d, revoked at %v; want 1 and not revoked", sess.Generation, sess.RevokedAt)
	}
	if got := feed(t, s, rotatedAt); len(got) != 0 {
		t.Errorf("feed after replays = %v, want empty", got)
	}
}

// testReplayAtGraceEnd: the window is Now < RotatedAt+Grace, so at exactly
// RotatedAt+Grace the parent is a reused token.
func testReplayAtGraceEnd(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	rotatedAt := t0.Add(10 * time.Minute)
	mustRotate(t, s, f.first.Hash, rotatedAt)
	res := rotate(t, s, rotateReq(t, f.first.Hash, rotatedAt.Add(grace)))
	if res.Outcome != store.ReuseDetected {
		t.Fatalf("outcome %v at RotatedAt+Grace, want reuse_detected", res.Outcome)
	}
}

// testReplayOnlyImmediateParent: a token whose child has itself been rotated
// is an older generation, even within its own grace window.
func testReplayOnlyImmediateParent(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	r1 := mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	mustRotate(t, s, r1.Child.Hash, t0.Add(time.Minute+time.Second))

	now := t0.Add(time.Minute + 2*time.Second) // within grace of both rotations
	req := rotateReq(t, f.first.Hash, now)
	res := rotate(t, s, req)
	if res.Outcome != store.ReuseDetected {
		t.Fatalf("grandparent within grace: outcome %v, want reuse_detected", res.Outcome)
	}
	if res.Sealed != nil {
		t.Errorf("Sealed = %q on reuse, want nil", res.Sealed)
	}
	if !res.Session.RevokedAt.Equal(now) {
		t.Errorf("result session RevokedAt = %v, want %v", res.Session.RevokedAt, now)
	}
	diff(t, "feed", []store.Revocation{{SessionID: f.session.ID, Subject: "user-1", Until: req.RevokeUntil}}, feed(t, s, now))
}

func testReuseAfterGrace(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	rotatedAt := t0.Add(10 * time.Minute)
	mustRotate(t, s, f.first.Hash, rotatedAt)

	now := rotatedAt.Add(grace + time.Second)
	req := rotateReq(t, f.first.Hash, now)
	res := rotate(t, s, req)
	if res.Outcome != store.ReuseDetected {
		t.Fatalf("outcome %v, want reuse_detected", res.Outcome)
	}
	want := f.session
	want.Generation = 1
	want.RevokedAt = now
	diff(t, "result session", want, res.Session)
	diff(t, "stored session", want, getSession(t, s, f.session.ID))
	if res.Parent.Hash != f.first.Hash {
		t.Errorf("result parent hash = %s, want %s", short(res.Parent.Hash), short(f.first.Hash))
	}
	_, err := s.GetToken(context.Background(), req.Child.Hash)
	wantNotFound(t, "GetToken(child of a reuse)", err)
	diff(t, "feed", []store.Revocation{{SessionID: f.session.ID, Subject: "user-1", Until: req.RevokeUntil}}, feed(t, s, now))
}

// testReuseThenChildIsRevoked: after reuse revoked the family, the current
// token (the legitimate holder's) is refused too.
func testReuseThenChildRevoked(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	r1 := mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	reuseAt := t0.Add(time.Hour / 2)
	if res := rotate(t, s, rotateReq(t, f.first.Hash, reuseAt)); res.Outcome != store.ReuseDetected {
		t.Fatalf("reuse: outcome %v, want reuse_detected", res.Outcome)
	}
	res := rotate(t, s, rotateReq(t, r1.Child.Hash, reuseAt.Add(time.Second)))
	if res.Outcome != store.Revoked {
		t.Fatalf("current token after reuse: outcome %v, want revoked", res.Outcome)
	}
	if got := feed(t, s, reuseAt); len(got) != 1 {
		t.Errorf("feed has %d entries, want exactly 1: %v", len(got), got)
	}
}

func testExpiredToken(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	for _, now := range []time.Time{f.first.ExpiresAt, f.first.ExpiresAt.Add(time.Minute)} {
		req := rotateReq(t, f.first.Hash, now)
		res := rotate(t, s, req)
		if res.Outcome != store.Expired {
			t.Fatalf("at %v (token expires %v): outcome %v, want expired", now, f.first.ExpiresAt, res.Outcome)
		}
		_, err := s.GetToken(context.Background(), req.Child.Hash)
		wantNotFound(t, "GetToken(child of an expired parent)", err)
	}
	diff(t, "session after expired refresh", f.session, getSession(t, s, f.session.ID))
	diff(t, "token after expired refresh", f.first, getToken(t, s, f.first.Hash))
}

func testExpiredSession(t *testing.T, s store.Store) {
	sess, tok := newSession(t, "user-1", t0)
	// The token's idle expiry is capped at the session's absolute expiry.
	tok.ExpiresAt = sess.ExpiresAt
	if err := s.CreateSession(context.Background(), sess, tok); err != nil {
		t.Fatal(err)
	}
	res := rotate(t, s, rotateReq(t, tok.Hash, sess.ExpiresAt))
	if res.Outcome != store.Expired {
		t.Fatalf("outcome %v, want expired", res.Outcome)
	}
	if res.Session.ID != sess.ID || !res.Session.RevokedAt.IsZero() {
		t.Errorf("result session = %+v, want the unrevoked session", res.Session)
	}
}

// testExpiredSessionBeforeReuse: rule 3 precedes rule 5, so a rotated token
// presented after the session ended does not revoke anything.
func testExpiredSessionBeforeReuse(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	res := rotate(t, s, rotateReq(t, f.first.Hash, f.session.ExpiresAt.Add(time.Minute)))
	if res.Outcome != store.Expired {
		t.Fatalf("outcome %v, want expired", res.Outcome)
	}
	if got := getSession(t, s, f.session.ID); !got.RevokedAt.IsZero() {
		t.Errorf("session revoked at %v, want not revoked", got.RevokedAt)
	}
	if got := feed(t, s, t0); len(got) != 0 {
		t.Errorf("feed = %v, want empty", got)
	}
}

func testRevokedSession(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	revokedAt := t0.Add(time.Minute)
	if _, err := s.RevokeSession(context.Background(), f.session.ID, revokedAt, revokedAt.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	req := rotateReq(t, f.first.Hash, revokedAt.Add(time.Second))
	res := rotate(t, s, req)
	if res.Outcome != store.Revoked {
		t.Fatalf("outcome %v, want revoked", res.Outcome)
	}
	if !res.Session.RevokedAt.Equal(revokedAt) {
		t.Errorf("result session RevokedAt = %v, want %v", res.Session.RevokedAt, revokedAt)
	}
	_, err := s.GetToken(context.Background(), req.Child.Hash)
	wantNotFound(t, "GetToken(child of a revoked parent)", err)
}

// testRevokedBeforeReuse: rule 2 precedes rule 5; reuse of a token in an
// already revoked session adds nothing to the feed.
func testRevokedBeforeReuse(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	revokedAt := t0.Add(2 * time.Minute)
	if _, err := s.RevokeSession(context.Background(), f.session.ID, revokedAt, revokedAt.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	res := rotate(t, s, rotateReq(t, f.first.Hash, t0.Add(10*time.Minute)))
	if res.Outcome != store.Revoked {
		t.Fatalf("outcome %v, want revoked", res.Outcome)
	}
	if got := getSession(t, s, f.session.ID); !got.RevokedAt.Equal(revokedAt) {
		t.Errorf("RevokedAt = %v, want the first revocation's %v", got.RevokedAt, revokedAt)
	}
	if got := feed(t, s, revokedAt); len(got) != 1 {
		t.Errorf("feed has %d entries, want 1: %v", len(got), got)
	}
}

func testUnknownToken(t *testing.T, s store.Store) {
	create(t, s, "user-1")
	req := rotateReq(t, newHash(t), t0)
	res := rotate(t, s, req)
	if res.Outcome != store.Unknown {
		t.Fatalf("outcome %v, want unknown", res.Outcome)
	}
	if res.Session.ID != "" || res.Parent.Hash != "" || res.Sealed != nil {
		t.Errorf("result for unknown = %+v, want zero session, parent and sealed", res)
	}
	_, err := s.GetToken(context.Background(), req.Child.Hash)
	wantNotFound(t, "GetToken(child of an unknown parent)", err)
}

// testConcurrentRotate: many callers race on one parent (two replicas, many
// tabs). Exactly one rotates; every other caller gets that rotation's sealed
// pair; only the winner's child is stored.
func testConcurrentRotate(t *testing.T, s store.Store) {
	const callers = 64
	f := create(t, s, "user-1")
	now := t0.Add(5 * time.Minute)
	reqs := make([]store.RotateRequest, callers)
	for i := range reqs {
		reqs[i] = rotateReq(t, f.first.Hash, now)
	}
	results := rotateAll(t, s, reqs)
	oneRotated(t, s, reqs, results, nil)
	if got := getSession(t, s, f.session.ID).Generation; got != 1 {
		t.Errorf("session generation = %d, want 1", got)
	}
}

// rotateAll sends every request to Rotate at once (a goroutine each, all
// released together) and returns the results in order; an error fails t.
func rotateAll(t *testing.T, s store.Store, reqs []store.RotateRequest) []store.RotateResult {
	t.Helper()
	results := make([]store.RotateResult, len(reqs))
	errs := make([]error, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = s.Rotate(context.Background(), reqs[i])
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	return results
}

// oneRotated checks the outcome of a race on one parent (rotateAll): of
// the callers racing for it (those for which racing is true; all when it
// is nil) exactly one rotated and every other replayed that rotation's
// sealed pair, and of all the callers' children only the winner's is
// stored.
func oneRotated(t *testing.T, s store.Store, reqs []store.RotateRequest, results []store.RotateResult, racing func(i int) bool) {
	t.Helper()
	winner := -1
	for i, res := range results {
		if racing != nil && !racing(i) {
			continue
		}
		switch res.Outcome {
		case store.Rotated:
			if winner >= 0 {
				t.Fatalf("callers %d and %d both rotated", winner, i)
			}
			winner = i
		case store.Replayed:
		default:
			t.Fatalf("caller %d: outcome %v, want rotated or replayed", i, res.Outcome)
		}
	}
	if winner < 0 {
		t.Fatal("no caller rotated")
	}
	for i, res := range results {
		if i != winner && (racing == nil || racing(i)) && !bytes.Equal(res.Sealed, reqs[winner].Sealed) {
			t.Errorf("caller %d replayed %q, want the winner's %q", i, res.Sealed, reqs[winner].Sealed)
		}
	}
	for i, req := range reqs {
		_, err := s.GetToken(context.Background(), req.Child.Hash)
		switch {
		case i == winner && err != nil:
			t.Errorf("winner's child: %v", err)
		case i != winner && !errors.Is(err, store.ErrNotFound):
			t.Errorf("caller %d's child: error %v, want store.ErrNotFound", i, err)
		}
	}
}
