package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

func testPatchClaims(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	claims := json.RawMessage(`{"name":"Ada Lovelace","roles":["viewer"],"tenant":"t-9"}`)
	got, err := s.PatchClaims(context.Background(), f.session.ID, claims, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("PatchClaims: %v", err)
	}
	want := f.session
	want.Claims = claims
	diff(t, "PatchClaims result", want, got)
	diff(t, "session after PatchClaims", want, getSession(t, s, f.session.ID))

	// Rotation keeps the patched claims.
	mustRotate(t, s, f.first.Hash, t0.Add(2*time.Minute))
	diff(t, "claims after rotation", claims, getSession(t, s, f.session.ID).Claims)
}

func testPatchClaimsInactive(t *testing.T, s store.Store) {
	revoked := create(t, s, "user-1")
	if _, err := s.RevokeSession(context.Background(), revoked.session.ID, t0, t0.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	expired := create(t, s, "user-2")
	claims := json.RawMessage(`{"roles":["root"]}`)
	tests := []struct {
		name string
		sid  string
		now  time.Time
	}{
		{"unknown", randomHex(t, 16), t0},
		{"revoked", revoked.session.ID, t0.Add(time.Minute)},
		{"expired", expired.session.ID, expired.session.ExpiresAt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.PatchClaims(context.Background(), tc.sid, claims, tc.now)
			wantNotFound(t, "PatchClaims", err)
		})
	}
	// Nothing was written.
	diff(t, "claims of the expired session", expired.session.Claims, getSession(t, s, expired.session.ID).Claims)
	diff(t, "claims of the revoked session", revoked.session.Claims, getSession(t, s, revoked.session.ID).Claims)
}

func testRevokeSessionIdempotent(t *testing.T, s store.Store) {
	f := create(t, s, "user-1")
	other := create(t, s, "user-1")
	at := t0.Add(time.Minute)
	until := at.Add(accessTTL)
	revoked, err := s.RevokeSession(context.Background(), f.session.ID, at, until)
	if err != nil || !revoked {
		t.Fatalf("first RevokeSession = %v, %v; want true, nil", revoked, err)
	}
	revoked, err = s.RevokeSession(context.Background(), f.session.ID, at.Add(time.Second), until.Add(time.Second))
	if err != nil || revoked {
		t.Fatalf("second RevokeSession = %v, %v; want false, nil", revoked, err)
	}
	want := f.session
	want.RevokedAt = at
	diff(t, "revoked session", want, getSession(t, s, f.session.ID))
	diff(t, "untouched session", other.session, getSession(t, s, other.session.ID))
	diff(t, "feed", []store.Revocation{{SessionID: f.session.ID, Subject: "user-1", Until: until}}, feed(t, s, at))
}

func testRevokeSessionUnknown(t *testing.T, s store.Store) {
	_, err := s.RevokeSession(context.Background(), randomHex(t, 16), t0, t0.Add(accessTTL))
	wantNotFound(t, "RevokeSession(unknown)", err)
	if got := feed(t, s, t0); len(got) != 0 {
		t.Errorf("feed = %v, want empty", got)
	}
}

func testRevokeSubject(t *testing.T, s store.Store) {
	ctx := context.Background()
	active1 := create(t, s, "alice")
	active2 := create(t, s, "alice")
	already := create(t, s, "alice")
	bob := create(t, s, "bob")
	if _, err := s.RevokeSession(ctx, already.session.ID, t0, t0.Add(accessTTL)); err != nil {
		t.Fatal(err)
	}
	ended, endedTok := newSession(t, "alice", t0.Add(-maxAge)) // expires at t0
	endedTok.ExpiresAt = ended.ExpiresAt
	if err := s.CreateSession(ctx, ended, endedTok); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(time.Minute)
	until := now.Add(accessTTL)
	got, err := s.RevokeSubject(ctx, "alice", now, until)
	if err != nil {
		t.Fatalf("RevokeSubject: %v", err)
	}
	slices.Sort(got)
	want := []string{active1.session.ID, active2.session.ID}
	slices.Sort(want)
	diff(t, "revoked session IDs", want, got)

	for _, f := range []fixture{active1, active2} {
		if at := getSession(t, s, f.session.ID).RevokedAt; !at.Equal(now) {
			t.Errorf("session %s RevokedAt = %v, want %v", f.session.ID, at, now)
		}
	}
	if at := getSession(t, s, already.session.ID).RevokedAt; !at.Equal(t0) {
		t.Errorf("already revoked session: RevokedAt = %v, want the original %v", at, t0)
	}
	if at := getSession(t, s, ended.ID).RevokedAt; !at.IsZero() {
		t.Errorf("expired session revoked at %v, want untouched", at)
	}
	diff(t, "bob's session", bob.session, getSession(t, s, bob.session.ID))

	var feedIDs []string
	for _, r := range feed(t, s, now) {
		if r.Subject != "alice" {
			t.Errorf("feed entry %+v: subject %q, want alice", r, r.Subject)
		}
		feedIDs = append(feedIDs, r.SessionID)
	}
	slices.Sort(feedIDs)
	wantFeed := append([]string{already.session.ID}, want...)
	slices.Sort(wantFeed)
	diff(t, "feed session IDs", wantFeed, feedIDs)

	again, err := s.RevokeSubject(ctx, "alice", now.Add(time.Second), until)
	if err != nil || len(again) != 0 {
		t.Errorf("second RevokeSubject = %v, %v; want none, nil", again, err)
	}
	none, err := s.RevokeSubject(ctx, "nobody", now, until)
	if err != nil || len(none) != 0 {
		t.Errorf("RevokeSubject(unknown subject) = %v, %v; want none, nil", none, err)
	}
}

func testRevocationsEmpty(t *testing.T, s store.Store) {
	got, cursor, err := s.Revocations(context.Background(), "", t0, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Revocations on an empty store = %v, %q, %v; want none, nil", got, cursor, err)
	}
	// The returned cursor is usable.
	got, _, err = s.Revocations(context.Background(), cursor, t0, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Revocations(%q) = %v, %v; want none, nil", cursor, got, err)
	}
}

func revokeNew(t *testing.T, s store.Store, sub string, at, until time.Time) store.Revocation {
	t.Helper()
	f := create(t, s, sub)
	if ok, err := s.RevokeSession(context.Background(), f.session.ID, at, until); err != nil || !ok {
		t.Fatalf("RevokeSession = %v, %v", ok, err)
	}
	return store.Revocation{SessionID: f.session.ID, Subject: sub, Until: until}
}

func testRevocationsCursor(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := t0.Add(time.Minute)
	a := revokeNew(t, s, "alice", now, now.Add(accessTTL))
	b := revokeNew(t, s, "bob", now.Add(time.Second), now.Add(time.Second+accessTTL))

	got, c1, err := s.Revocations(ctx, "", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "first read", []store.Revocation{a, b}, got)

	got, c2, err := s.Revocations(ctx, c1, now, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("read at the end = %v, %v; want none", got, err)
	}
	if c2 != c1 {
		t.Errorf("cursor moved from %q to %q with nothing read", c1, c2)
	}

	c := revokeNew(t, s, "carol", now.Add(2*time.Second), now.Add(2*time.Second+accessTTL))
	got, c3, err := s.Revocations(ctx, c1, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "read after cursor", []store.Revocation{c}, got)
	if got, _, _ := s.Revocations(ctx, c3, now, 0); len(got) != 0 {
		t.Errorf("read after the last cursor = %v, want none", got)
	}
	// Re-reading from the start still returns everything retained.
	diff(t, "read from the start", []store.Revocation{a, b, c}, feed(t, s, now))
}

func testRevocationsDropsPastUntil(t *testing.T, s store.Store) {
	ctx := context.Background()
	short := revokeNew(t, s, "alice", t0, t0.Add(time.Minute))
	long := revokeNew(t, s, "bob", t0, t0.Add(10*time.Minute))
	diff(t, "before any until", []store.Revocation{short, long}, feed(t, s, t0))
	// At exactly Until the entry is gone: every access token has expired.
	diff(t, "at the first until", []store.Revocation{long}, feed(t, s, short.Until))
	got, cursor, err := s.Revocations(ctx, "", long.Until, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("after every until = %v, %v; want none", got, err)
	}
	// The cursor from a read that dropped everything still works.
	later := revokeNew(t, s, "carol", long.Until, long.Until.Add(accessTTL))
	got, _, err = s.Revocations(ctx, cursor, long.Until, 0)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "read after dropped entries", []store.Revocation{later}, got)
}

// testRevocationsForeignCursor: a cursor from another backend (or garbage
// from a client) restarts from what is retained.
func testRevocationsForeignCursor(t *testing.T, s store.Store) {
	a := revokeNew(t, s, "alice", t0, t0.Add(accessTTL))
	for _, cursor := range []string{"not-a-cursor", "x:1", "-"} {
		got, _, err := s.Revocations(context.Background(), cursor, t0, 0)
		if err != nil {
			t.Errorf("Revocations(%q): %v", cursor, err)
			continue
		}
		if !slices.ContainsFunc(got, func(r store.Revocation) bool { return r.SessionID == a.SessionID }) {
			t.Errorf("Revocations(%q) = %v, want the retained entry %s", cursor, got, a.SessionID)
		}
	}
}

// testRevocationsWaitWakes: a reader waiting at the end of the feed receives
// an entry revoked by another goroutine. The wait bound is only a timeout.
func testRevocationsWaitWakes(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, cursor, err := s.Revocations(ctx, "", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := create(t, s, "alice")
	type result struct {
		got []store.Revocation
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, _, err := s.Revocations(ctx, cursor, t0, 30*time.Second)
		done <- result{got, err}
	}()
	until := t0.Add(accessTTL)
	if _, err := s.RevokeSession(ctx, f.session.ID, t0, until); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("waiting Revocations: %v", r.err)
		}
		diff(t, "waited entries", []store.Revocation{{SessionID: f.session.ID, Subject: "alice", Until: until}}, r.got)
	case <-time.After(20 * time.Second):
		t.Fatal("waiting Revocations did not return the new entry")
	}
}

func testRevocationsWaitTimesOut(t *testing.T, s store.Store) {
	a := revokeNew(t, s, "alice", t0, t0.Add(accessTTL))
	_, cursor, err := s.Revocations(context.Background(), "", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, next, err := s.Revocations(context.Background(), cursor, t0, 50*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("wait with nothing new = %v, %v; want none, nil", got, err)
	}
	// The cursor handed back still points after a.
	got, _, err = s.Revocations(context.Background(), next, t0, 0)
	if err != nil || slices.ContainsFunc(got, func(r store.Revocation) bool { return r.SessionID == a.SessionID }) {
		t.Errorf("read after the wait's cursor = %v, %v; want a not repeated", got, err)
	}
}

func testRevocationsWaitCancelled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Revocations(ctx, "", t0, 10*time.Minute)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled wait: error %v, want nil or context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Revocations kept waiting after its context was cancelled")
	}
}
