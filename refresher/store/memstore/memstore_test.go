package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/memstore"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return memstore.New() })
}

func TestPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := memstore.New()
	for id, exp := range map[string]time.Time{"old": t0.Add(time.Hour), "live": t0.Add(48 * time.Hour)} {
		sess := store.Session{ID: id, Subject: "alice", CreatedAt: t0, IdleTTL: time.Hour, ExpiresAt: exp}
		if err := s.CreateSession(ctx, sess, store.Token{Hash: "h-" + id, IssuedAt: t0, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Prune(t0.Add(2 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetToken(ctx, "h-old"); err != store.ErrNotFound {
		t.Errorf("expired session's token kept: %v", err)
	}
	if _, err := s.GetSession(ctx, "old"); err != store.ErrNotFound {
		t.Errorf("expired session kept: %v", err)
	}
	if _, err := s.GetToken(ctx, "h-live"); err != nil {
		t.Errorf("live token pruned: %v", err)
	}
}
