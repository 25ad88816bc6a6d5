package boltstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

func open(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "tokengate.db"))
	})
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Sessions, tokens and the feed survive closing and reopening the file.
func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokengate.db")
	s := open(t, path)
	sess := store.Session{ID: "s1", Subject: "alice", CreatedAt: t0, IdleTTL: time.Hour, ExpiresAt: t0.Add(24 * time.Hour)}
	if err := s.CreateSession(ctx, sess, store.Token{Hash: "h0", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: "h0", Child: store.Token{Hash: "h1", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		Sealed: []byte("sealed"), Now: t0, Grace: 30 * time.Second, RevokeUntil: t0.Add(15 * time.Minute)})
	if err != nil || res.Outcome != store.Rotated {
		t.Fatalf("Rotate = %v, %v", res.Outcome, err)
	}
	if _, err := s.RevokeSubject(ctx, "bob", t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	res, err = s.Rotate(ctx, store.RotateRequest{ParentHash: "h0", Child: store.Token{Hash: "hx"}, Now: t0.Add(time.Second), Grace: 30 * time.Second})
	if err != nil || res.Outcome != store.Replayed || string(res.Sealed) != "sealed" {
		t.Fatalf("after reopen: Rotate(h0) = %v %q, %v; want replayed \"sealed\"", res.Outcome, res.Sealed, err)
	}
	tok, err := s.GetToken(ctx, "h1")
	if err != nil || tok.Generation != 1 || tok.SessionID != "s1" {
		t.Fatalf("GetToken(h1) = %+v, %v", tok, err)
	}
}

// A second process cannot open a held file; it fails fast with a clear error.
func TestLockedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokengate.db")
	s := open(t, path)
	defer s.Close()
	if _, err := boltstore.Open(path); err == nil {
		t.Fatal("second Open succeeded")
	}
}

// Prune drops expired sessions with their tokens and feed entries past until.
func TestPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "tokengate.db"))
	defer s.Close()
	for _, id := range []string{"old", "live"} {
		exp := t0.Add(time.Hour)
		if id == "live" {
			exp = t0.Add(48 * time.Hour)
		}
		sess := store.Session{ID: id, Subject: "alice", CreatedAt: t0, IdleTTL: time.Hour, ExpiresAt: exp}
		if err := s.CreateSession(ctx, sess, store.Token{Hash: "h-" + id, IssuedAt: t0, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeSession(ctx, "live", t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Prune(t0.Add(2 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "old"); err != store.ErrNotFound {
		t.Errorf("expired session kept: %v", err)
	}
	if _, err := s.GetToken(ctx, "h-old"); err != store.ErrNotFound {
		t.Errorf("expired session's token kept: %v", err)
	}
	if _, err := s.GetSession(ctx, "live"); err != nil {
		t.Errorf("live session pruned: %v", err)
	}
	revs, _, err := s.Revocations(ctx, "", t0, 0)
	if err != nil || len(revs) != 0 {
		t.Errorf("feed after prune = %v, %v; want empty", revs, err)
	}
}
