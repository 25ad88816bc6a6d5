package redisstore_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// TestOutage stops redis-server (by its PID) under an open store: every call
// fails with an error that is not ErrNotFound and not a decision (so the
// refresher answers 503, never invalid_grant); after a restart the same
// store serves again and the session (persisted with appendfsync always)
// is intact.
func TestOutage(t *testing.T) {
	aof := []string{"--appendonly", "yes", "--appendfsync", "always"}
	r := proctest.StartRedis(t, aof...)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{Timeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	now := time.Now().UTC().Truncate(time.Second)
	sess := store.Session{ID: "outage-sid", Subject: "u1", Claims: []byte(`{}`), CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	first := store.Token{Hash: "aa11", SessionID: sess.ID, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess, first); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	req := store.RotateRequest{ParentHash: first.Hash, Child: store.Token{Hash: "bb22", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		Sealed: []byte("x"), Now: now.Add(time.Minute), Grace: 30 * time.Second, RevokeUntil: now.Add(16 * time.Minute)}
	res, err := s.Rotate(ctx, req)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Rotate during outage = %v, %v; want a store error", res.Outcome, err)
	}
	if _, err := s.GetSession(ctx, sess.ID); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSession during outage: %v; want a store error, not ErrNotFound", err)
	}
	if _, err := s.GetToken(ctx, first.Hash); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetToken during outage: %v; want a store error, not ErrNotFound", err)
	}
	if _, err := s.RevokeSession(ctx, sess.ID, now, now.Add(time.Minute)); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeSession during outage: %v; want a store error", err)
	}
	if _, _, err := s.Revocations(ctx, "", now, 100*time.Millisecond); err == nil {
		t.Error("Revocations during outage: no error")
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping during outage: no error")
	}

	r.Restart(aof...)
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetSession after restart: %v", err)
	}
	if !got.RevokedAt.IsZero() || got.Generation != 0 {
		t.Errorf("session after the outage = %+v, want active at generation 0", got)
	}
	if res, err := s.Rotate(ctx, req); err != nil || res.Outcome != store.Rotated {
		t.Fatalf("Rotate after restart = %v, %v; want rotated", res.Outcome, err)
	}
}

// TestWaitingPollsDoNotStarveRefreshes: with a pool of 4 connections, 64
// long polls waiting on the feed hold none of them (one shared reader
// does), so a rotation still goes through, and the revocation it causes
// wakes every poll.
func TestWaitingPollsDoNotStarveRefreshes(t *testing.T) {
	r := proctest.StartRedis(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{PoolSize: 4, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC().Truncate(time.Second)
	sess := store.Session{ID: "poll-sid", Subject: "u1", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	first := store.Token{Hash: "cc33", SessionID: sess.ID, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess, first); err != nil {
		t.Fatal(err)
	}
	_, cursor, err := s.Revocations(ctx, "", now, 0)
	if err != nil {
		t.Fatal(err)
	}

	const polls = 64
	got := make(chan []store.Revocation, polls)
	for range polls {
		go func() {
			revs, _, err := s.Revocations(ctx, cursor, now, time.Minute)
			if err != nil {
				t.Errorf("Revocations: %v", err)
			}
			got <- revs
		}()
	}
	req := store.RotateRequest{ParentHash: first.Hash, Child: store.Token{Hash: "dd44", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		Sealed: []byte("x"), Now: now, Grace: time.Second, RevokeUntil: now.Add(time.Minute)}
	if res, err := s.Rotate(ctx, req); err != nil || res.Outcome != store.Rotated {
		t.Fatalf("Rotate with %d polls waiting = %v, %v; want rotated", polls, res.Outcome, err)
	}
	if _, err := s.RevokeSession(ctx, sess.ID, now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for range polls {
		select {
		case revs := <-got:
			if len(revs) != 1 || revs[0].SessionID != sess.ID {
				t.Fatalf("a poll returned %v, want the one revocation", revs)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a waiting poll was not woken by the revocation")
		}
	}
}

// TestClusterFeedGapCloses: on Cluster a revocation reaches the feed in a
// second step. Simulate that step failing (the entry and its mark removed)
// and check that the next revocation attempt — a repeated sign-out or a
// refresh of the revoked session — appends it.
func TestClusterFeedGapCloses(t *testing.T) {
	r := proctest.StartRedis(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{KeyPrefix: "gap:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	redisstore.SplitKeys(s)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, via := range []string{"revoke", "refresh"} {
		t.Run(via, func(t *testing.T) {
			sid := "gap-" + via
			sess := store.Session{ID: sid, Subject: "u", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
			first := store.Token{Hash: "h-" + via, SessionID: sid, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
			if err := s.CreateSession(ctx, sess, first); err != nil {
				t.Fatal(err)
			}
			if ok, err := s.RevokeSession(ctx, sid, now, now.Add(time.Minute)); err != nil || !ok {
				t.Fatalf("RevokeSession = %v, %v", ok, err)
			}
			// The lost second step: no feed entry, no mark.
			s.Client().Del(ctx, "gap:feed")
			s.Client().HDel(ctx, "gap:s:{"+sid+"}", "fed")

			switch via {
			case "revoke":
				if ok, err := s.RevokeSession(ctx, sid, now.Add(time.Second), now.Add(time.Minute)); err != nil || ok {
					t.Fatalf("second RevokeSession = %v, %v; want false, nil", ok, err)
				}
			case "refresh":
				res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: first.Hash, Now: now.Add(time.Second), Grace: time.Second,
					RevokeUntil: now.Add(time.Minute), Child: store.Token{Hash: "c-" + via, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}})
				if err != nil || res.Outcome != store.Revoked {
					t.Fatalf("Rotate = %v, %v; want revoked", res.Outcome, err)
				}
			}
			revs, _, err := s.Revocations(ctx, "", now, 0)
			if err != nil || len(revs) != 1 || revs[0].SessionID != sid {
				t.Fatalf("feed after the retry = %v, %v; want the session", revs, err)
			}
			// Once on the feed, further attempts add nothing.
			s.RevokeSession(ctx, sid, now.Add(2*time.Second), now.Add(time.Minute))
			if revs, _, _ := s.Revocations(ctx, "", now, 0); len(revs) != 1 {
				t.Errorf("feed has %d entries after another attempt, want 1", len(revs))
			}
			s.Client().Del(ctx, "gap:feed")
		})
	}
}
