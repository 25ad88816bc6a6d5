package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// A session hash without the 'jkt' and 'dev' fields (as written before
// DPoP binding existed, and still for an unbound session) loads unbound;
// the first rotation with a key adds 'jkt' in the same script.
func TestSessionWithoutBindingFields(t *testing.T) {
	r := proctest.StartRedis(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{KeyPrefix: "old:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sess := store.Session{ID: "old-sid", Subject: "u1", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	if err := s.CreateSession(ctx, sess, store.Token{Hash: "aa01", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	key := "old:s:{old-sid}"
	for _, f := range []string{"jkt", "dev"} {
		if n, err := s.Client().HExists(ctx, key, f).Result(); err != nil || n {
			t.Fatalf("HEXISTS %s %s = %v, %v; want absent", key, f, n, err)
		}
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil || got.JKT != "" || got.Device != "" {
		t.Fatalf("GetSession = %+v, %v; want unbound", got, err)
	}
	const jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: "aa01", Child: store.Token{Hash: "aa02", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		Sealed: []byte("sealed"), Now: now.Add(time.Minute), Grace: 30 * time.Second, RevokeUntil: now.Add(15 * time.Minute), JKT: jkt})
	if err != nil || res.Outcome != store.Rotated || res.Session.JKT != jkt {
		t.Fatalf("Rotate = %v (jkt %q), %v; want rotated and bound", res.Outcome, res.Session.JKT, err)
	}
	if v, err := s.Client().HGet(ctx, key, "jkt").Result(); err != nil || v != jkt {
		t.Fatalf("HGET jkt = %q, %v", v, err)
	}
}
