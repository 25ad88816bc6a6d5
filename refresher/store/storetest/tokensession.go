package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

// testGetTokenSession: a backend that reads a token and its session
// together (store.TokenSessionGetter) returns exactly what GetToken and
// GetSession return, for a fresh token, a rotated parent and its child, and
// ErrNotFound for an unknown token. Backends without it skip.
func testGetTokenSession(t *testing.T, s store.Store) {
	g, ok := s.(store.TokenSessionGetter)
	if !ok {
		t.Skip("the backend does not implement store.TokenSessionGetter")
	}
	ctx := context.Background()
	f := create(t, s, "user-1")
	same := func(hash string) {
		t.Helper()
		tok, sess, err := g.GetTokenSession(ctx, hash)
		if err != nil {
			t.Fatalf("GetTokenSession: %v", err)
		}
		diff(t, "token", getToken(t, s, hash), tok)
		diff(t, "session", getSession(t, s, tok.SessionID), sess)
	}
	same(f.first.Hash)
	req := mustRotate(t, s, f.first.Hash, t0.Add(time.Minute))
	same(f.first.Hash)
	same(req.Child.Hash)
	if _, _, err := g.GetTokenSession(ctx, newHash(t)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTokenSession of an unknown token: %v, want ErrNotFound", err)
	}
}
