package storetest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

// The DPoP rows of the Rotate decision table: a session bound to a key
// (Session.JKT) rotates and replays only for a request that proved that
// key (RotateRequest.JKT); anything else is KeyMismatch and changes
// nothing. An unbound session is bound by the rotation that first brings a
// key, in the same atomic step.

// Two thumbprints (43 base64url characters, the form of an RFC 7638
// SHA-256 thumbprint).
const (
	jktA = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	jktB = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	dev  = "Xl2sGjR2AWs0_DD5kKAUrv9MuqM4Tz7rj1Y8mC2L5xQ"
)

// createBound creates a session bound to jkt with a device hash.
func createBound(t *testing.T, s store.Store, sub, jkt string) fixture {
	t.Helper()
	sess, tok := newSession(t, sub, t0)
	sess.JKT, sess.Device = jkt, dev
	if err := s.CreateSession(context.Background(), sess, tok); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return fixture{session: sess, first: tok}
}

func rotateKey(t *testing.T, parent string, now time.Time, jkt string) store.RotateRequest {
	t.Helper()
	req := rotateReq(t, parent, now)
	req.JKT = jkt
	return req
}

// testCreateBound: the binding and the device hash survive the store,
// replacing the claims and revoking the session.
func testCreateBound(t *testing.T, s store.Store) {
	f := createBound(t, s, "user-1", jktA)
	diff(t, "GetSession", f.session, getSession(t, s, f.session.ID))
	patched, err := s.PatchClaims(context.Background(), f.session.ID, []byte(`{"a":1}`), t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("PatchClaims: %v", err)
	}
	if patched.JKT != jktA || patched.Device != dev {
		t.Errorf("PatchClaims result: jkt %q dev %q, want the binding kept", patched.JKT, patched.Device)
	}
	at := t0.Add(2 * time.Minute)
	if _, err := s.RevokeSession(context.Background(), f.session.ID, at, at.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	if got := getSession(t, s, f.session.ID); got.JKT != jktA || got.Device != dev {
		t.Errorf("after patch and revoke: jkt %q dev %q, want the binding kept", got.JKT, got.Device)
	}
}

// testBoundRotateSameKey: the right key rotates; the session keeps its key
// and device.
func testBoundRotateSameKey(t *testing.T, s store.Store) {
	f := createBound(t, s, "user-1", jktA)
	now := t0.Add(time.Minute)
	res := rotate(t, s, rotateKey(t, f.first.Hash, now, jktA))
	if res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, want rotated", res.Outcome)
	}
	want := f.session
	want.Generation = 1
	diff(t, "result session", want, res.Session)
	diff(t, "stored session", want, getSession(t, s, f.session.ID))
}

// testBoundRotateOtherKey: another key, or none, is refused and nothing
// changes: the parent stays unrotated, no child, no revocation.
func testBoundRotateOtherKey(t *testing.T, s store.Store) {
	for _, jkt := range []string{jktB, ""} {
		t.Run(fmt.Sprintf("jkt=%q", jkt), func(t *testing.T) {
			f := createBound(t, s, "user-1", jktA)
			now := t0.Add(time.Minute)
			req := rotateKey(t, f.first.Hash, now, jkt)
			res := rotate(t, s, req)
			if res.Outcome != store.KeyMismatch {
				t.Fatalf("outcome %v, want key_mismatch", res.Outcome)
			}
			if res.Sealed != nil {
				t.Errorf("Sealed = %q on a key mismatch, want nil", res.Sealed)
			}
			diff(t, "stored session", f.session, getSession(t, s, f.session.ID))
			diff(t, "stored parent", f.first, getToken(t, s, f.first.Hash))
			_, err := s.GetToken(context.Background(), req.Child.Hash)
			wantNotFound(t, "GetToken(child of a key mismatch)", err)
			if got := feed(t, s, now); len(got) != 0 {
				t.Errorf("feed = %v, want empty", got)
			}
			// The holder of the key still rotates.
			if res := rotate(t, s, rotateKey(t, f.first.Hash, now.Add(time.Second), jktA)); res.Outcome != store.Rotated {
				t.Fatalf("right key after a mismatch: outcome %v, want rotated", res.Outcome)
			}
		})
	}
}

// testBoundReplayOtherKey: inside the grace window only the bound key gets
// the pair the rotation issued.
func testBoundReplayOtherKey(t *testing.T, s store.Store) {
	f := createBound(t, s, "user-1", jktA)
	rotatedAt := t0.Add(time.Minute)
	first := rotateKey(t, f.first.Hash, rotatedAt, jktA)
	if res := rotate(t, s, first); res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, want rotated", res.Outcome)
	}
	now := rotatedAt.Add(time.Second)
	for _, jkt := range []string{jktB, ""} {
		res := rotate(t, s, rotateKey(t, f.first.Hash, now, jkt))
		if res.Outcome != store.KeyMismatch || res.Sealed != nil {
			t.Fatalf("replay with jkt %q: outcome %v sealed %q, want key_mismatch and no pair", jkt, res.Outcome, res.Sealed)
		}
	}
	res := rotate(t, s, rotateKey(t, f.first.Hash, now, jktA))
	if res.Outcome != store.Replayed || !bytes.Equal(res.Sealed, first.Sealed) {
		t.Fatalf("replay with the bound key: outcome %v sealed %q, want replayed %q", res.Outcome, res.Sealed, first.Sealed)
	}
}

// testBoundReuseOtherKey: a rotated token presented after the grace window
// without the key is refused without revoking the session: a thief cannot
// sign the owner out with a token it cannot use.
func testBoundReuseOtherKey(t *testing.T, s store.Store) {
	f := createBound(t, s, "user-1", jktA)
	r1 := rotateKey(t, f.first.Hash, t0.Add(time.Minute), jktA)
	if res := rotate(t, s, r1); res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, want rotated", res.Outcome)
	}
	now := t0.Add(time.Hour / 2)
	if res := rotate(t, s, rotateKey(t, f.first.Hash, now, jktB)); res.Outcome != store.KeyMismatch {
		t.Fatalf("old token, other key: outcome %v, want key_mismatch", res.Outcome)
	}
	if got := getSession(t, s, f.session.ID); !got.RevokedAt.IsZero() {
		t.Errorf("session revoked at %v by a request without the key", got.RevokedAt)
	}
	if got := feed(t, s, now); len(got) != 0 {
		t.Errorf("feed = %v, want empty", got)
	}
	// The bound key presenting the old token is reuse, as always.
	if res := rotate(t, s, rotateKey(t, f.first.Hash, now, jktA)); res.Outcome != store.ReuseDetected {
		t.Fatalf("old token, bound key: outcome %v, want reuse_detected", res.Outcome)
	}
}

// testBoundRevokedAndExpired: a revoked or expired session answers so
// whatever key comes (rows 2 and 3 precede the key check).
func testBoundRevokedAndExpired(t *testing.T, s store.Store) {
	f := createBound(t, s, "user-1", jktA)
	if res := rotate(t, s, rotateKey(t, f.first.Hash, f.session.ExpiresAt, jktB)); res.Outcome != store.Expired {
		t.Fatalf("expired session, other key: outcome %v, want expired", res.Outcome)
	}
	at := t0.Add(time.Minute)
	if _, err := s.RevokeSession(context.Background(), f.session.ID, at, at.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	if res := rotate(t, s, rotateKey(t, f.first.Hash, at.Add(time.Second), jktB)); res.Outcome != store.Revoked {
		t.Fatalf("revoked session, other key: outcome %v, want revoked", res.Outcome)
	}
}

// testUnboundBindsOnRotate: the first rotation with a key binds the
// session to it (the roll-out from optional to required), atomically with
// the rotation; from then on the session needs that key.
func testUnboundBindsOnRotate(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	now := t0.Add(time.Minute)
	req := rotateKey(t, f.first.Hash, now, jktA)
	res := rotate(t, s, req)
	if res.Outcome != store.Rotated {
		t.Fatalf("outcome %v, want rotated", res.Outcome)
	}
	want := f.session
	want.Generation = 1
	want.JKT = jktA
	diff(t, "result session", want, res.Session)
	diff(t, "stored session", want, getSession(t, s, f.session.ID))
	next := now.Add(time.Minute)
	for _, jkt := range []string{"", jktB} {
		if res := rotate(t, s, rotateKey(t, req.Child.Hash, next, jkt)); res.Outcome != store.KeyMismatch {
			t.Fatalf("child with jkt %q after binding: outcome %v, want key_mismatch", jkt, res.Outcome)
		}
	}
	if res := rotate(t, s, rotateKey(t, req.Child.Hash, next, jktA)); res.Outcome != store.Rotated {
		t.Fatalf("child with the bound key: outcome %v, want rotated", res.Outcome)
	}
}

// testUnboundStaysUnbound: without a key an unbound session rotates as
// always and stays unbound; a replay with a key does not bind it.
func testUnboundStaysUnbound(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	now := t0.Add(time.Minute)
	first := mustRotate(t, s, f.first.Hash, now)
	res := rotate(t, s, rotateKey(t, f.first.Hash, now.Add(time.Second), jktA))
	if res.Outcome != store.Replayed || !bytes.Equal(res.Sealed, first.Sealed) {
		t.Fatalf("replay with a key: outcome %v, want replayed", res.Outcome)
	}
	if got := getSession(t, s, f.session.ID); got.JKT != "" {
		t.Errorf("session bound to %q by a replay, want unbound", got.JKT)
	}
}

// testConcurrentBoundRotate: the owner's requests (bound key) race a
// thief's (other key) on one parent. Exactly one owner request rotates, the
// other owner requests replay its pair, and every thief request is refused
// without the pair.
func testConcurrentBoundRotate(t *testing.T, s store.Store) {
	const callers = 64
	f := createBound(t, s, "user-1", jktA)
	now := t0.Add(5 * time.Minute)
	reqs := make([]store.RotateRequest, callers)
	for i := range reqs {
		jkt := jktA
		if i%2 == 1 {
			jkt = jktB
		}
		reqs[i] = rotateKey(t, f.first.Hash, now, jkt)
	}
	results := rotateAll(t, s, reqs)
	for i := 1; i < callers; i += 2 {
		if res := results[i]; res.Outcome != store.KeyMismatch || res.Sealed != nil {
			t.Fatalf("thief %d: outcome %v, sealed %q; want key_mismatch and no pair", i, res.Outcome, res.Sealed)
		}
	}
	oneRotated(t, s, reqs, results, func(i int) bool { return i%2 == 0 })
	if got := getSession(t, s, f.session.ID); got.Generation != 1 || got.JKT != jktA || !got.RevokedAt.IsZero() {
		t.Errorf("session = generation %d, jkt %q, revoked %v; want 1, the bound key, active", got.Generation, got.JKT, got.RevokedAt)
	}
}
