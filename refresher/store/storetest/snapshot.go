package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

// The one-step rotation from a session snapshot (store.SnapshotRotator):
// where Rotate would rotate it checks first that the session is still at
// the snapshot's generation with the same claims, else writes nothing and
// answers ErrStale; every other outcome is Rotate's. Backends without it
// skip.

func snapshotRotator(t *testing.T, s store.Store) store.SnapshotRotator {
	t.Helper()
	r, ok := s.(store.SnapshotRotator)
	if !ok {
		t.Skip("the backend does not implement store.SnapshotRotator")
	}
	return r
}

// snapshotOf is what an issuer remembers of f's session after its first
// token was issued.
func snapshotOf(f fixture) store.Snapshot {
	return store.Snapshot{Session: f.session}
}

func rotateIfCurrent(t *testing.T, r store.SnapshotRotator, req store.RotateRequest, want store.Snapshot) (store.RotateResult, error) {
	t.Helper()
	res, err := r.RotateIfCurrent(context.Background(), req, want)
	if err != nil && !errors.Is(err, store.ErrStale) {
		t.Fatalf("RotateIfCurrent(%s at %v): %v", short(req.ParentHash), req.Now, err)
	}
	return res, err
}

// testSnapshotRotateCurrent: a current snapshot rotates exactly like
// Rotate (same answer, same records), and the chain continues from the
// session the answer returns.
func testSnapshotRotateCurrent(t *testing.T, s store.Store) {
	r := snapshotRotator(t, s)
	f := create(t, s, "user-1")
	now := t0.Add(10 * time.Minute)
	req := rotateReq(t, f.first.Hash, now)
	res, err := rotateIfCurrent(t, r, req, snapshotOf(f))
	if err != nil || res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, error %v, want rotated", res.Outcome, err)
	}
	wantSession := f.session
	wantSession.Generation = 1
	wantParent := f.first
	wantParent.RotatedAt, wantParent.ChildHash = now, req.Child.Hash
	wantChild := req.Child
	wantChild.SessionID, wantChild.Generation = f.session.ID, 1
	diff(t, "result session", wantSession, res.Session)
	diff(t, "result parent", wantParent, res.Parent)
	diff(t, "stored session", wantSession, getSession(t, s, f.session.ID))
	diff(t, "stored parent", wantParent, getToken(t, s, f.first.Hash))
	diff(t, "stored child", wantChild, getToken(t, s, req.Child.Hash))

	next := rotateReq(t, req.Child.Hash, now.Add(time.Minute))
	next.JKT = jktA // the rotation that binds the session
	res, err = rotateIfCurrent(t, r, next, store.Snapshot{Session: res.Session})
	if err != nil || res.Outcome != store.Rotated {
		t.Fatalf("second rotation: outcome %v, error %v, want rotated", res.Outcome, err)
	}
	wantSession.Generation, wantSession.JKT = 2, jktA
	diff(t, "result session after the second rotation", wantSession, res.Session)
	diff(t, "stored session after the second rotation", wantSession, getSession(t, s, f.session.ID))
}

// testSnapshotStaleClaims: claims patched since the snapshot → ErrStale,
// nothing written; the ordinary Rotate then rotates.
func testSnapshotStaleClaims(t *testing.T, s store.Store) {
	r := snapshotRotator(t, s)
	f := create(t, s, "user-1")
	patched := json.RawMessage(`{"name":"Ada","roles":["viewer"]}`)
	if _, err := s.PatchClaims(context.Background(), f.session.ID, patched, t0.Add(time.Minute)); err != nil {
		t.Fatalf("PatchClaims: %v", err)
	}
	before := getSession(t, s, f.session.ID)
	now := t0.Add(2 * time.Minute)
	req := rotateReq(t, f.first.Hash, now)
	if _, err := rotateIfCurrent(t, r, req, snapshotOf(f)); !errors.Is(err, store.ErrStale) {
		t.Fatalf("error %v, want ErrStale", err)
	}
	diff(t, "session after a stale rotation", before, getSession(t, s, f.session.ID))
	diff(t, "parent after a stale rotation", f.first, getToken(t, s, f.first.Hash))
	if _, err := s.GetToken(context.Background(), req.Child.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("child of a stale rotation: GetToken error %v, want ErrNotFound", err)
	}
	mustRotate(t, s, f.first.Hash, now)
}

// testSnapshotStaleGeneration: a snapshot of another generation → ErrStale,
// nothing written.
func testSnapshotStaleGeneration(t *testing.T, s store.Store) {
	r := snapshotRotator(t, s)
	f := create(t, s, "user-1")
	want := snapshotOf(f)
	want.Session.Generation = 7
	req := rotateReq(t, f.first.Hash, t0.Add(time.Minute))
	if _, err := rotateIfCurrent(t, r, req, want); !errors.Is(err, store.ErrStale) {
		t.Fatalf("error %v, want ErrStale", err)
	}
	diff(t, "session after a stale rotation", f.session, getSession(t, s, f.session.ID))
	diff(t, "parent after a stale rotation", f.first, getToken(t, s, f.first.Hash))
}

// testSnapshotDecisions: a snapshot that is out of date because the session
// was revoked or its token rotated (another replica) is decided as Rotate
// decides it: revoked, replayed within the grace window, reuse after it
// (which revokes), key mismatch, unknown.
func testSnapshotDecisions(t *testing.T, s store.Store) {
	r := snapshotRotator(t, s)
	ctx := context.Background()

	f := create(t, s, "revoked")
	if _, err := s.RevokeSession(ctx, f.session.ID, t0.Add(time.Minute), t0.Add(time.Minute+accessTTL)); err != nil {
		t.Fatal(err)
	}
	if res, err := rotateIfCurrent(t, r, rotateReq(t, f.first.Hash, t0.Add(2*time.Minute)), snapshotOf(f)); err != nil || res.Outcome != store.Revoked {
		t.Errorf("revoked session: outcome %v, error %v, want revoked", res.Outcome, err)
	}

	f = create(t, s, "replayed")
	first := mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	res, err := rotateIfCurrent(t, r, rotateReq(t, f.first.Hash, t0.Add(time.Minute+grace/2)), snapshotOf(f))
	if err != nil || res.Outcome != store.Replayed || string(res.Sealed) != string(first.Sealed) {
		t.Errorf("rotated parent within grace: outcome %v, error %v, sealed %q, want replayed with %q", res.Outcome, err, res.Sealed, first.Sealed)
	}
	now := t0.Add(time.Minute + grace)
	res, err = rotateIfCurrent(t, r, rotateReq(t, f.first.Hash, now), snapshotOf(f))
	if err != nil || res.Outcome != store.ReuseDetected {
		t.Errorf("rotated parent after grace: outcome %v, error %v, want reuse_detected", res.Outcome, err)
	}
	if !getSession(t, s, f.session.ID).RevokedAt.Equal(now) {
		t.Errorf("session not revoked at %v after reuse", now)
	}
	if got := feed(t, s, now); len(got) != 2 || got[1].SessionID != f.session.ID {
		t.Errorf("feed after reuse = %v, want the revoked session's entry, then this one's", got)
	}

	f = createBound(t, s, "bound", jktA)
	req := rotateKey(t, f.first.Hash, t0.Add(time.Minute), jktB)
	if res, err := rotateIfCurrent(t, r, req, snapshotOf(f)); err != nil || res.Outcome != store.KeyMismatch {
		t.Errorf("another key: outcome %v, error %v, want key_mismatch", res.Outcome, err)
	}
	diff(t, "parent after a key mismatch", f.first, getToken(t, s, f.first.Hash))

	f = create(t, s, "unknown")
	if res, err := rotateIfCurrent(t, r, rotateReq(t, newHash(t), t0.Add(time.Minute)), snapshotOf(f)); err != nil || res.Outcome != store.Unknown {
		t.Errorf("unknown token: outcome %v, error %v, want unknown", res.Outcome, err)
	}
}
