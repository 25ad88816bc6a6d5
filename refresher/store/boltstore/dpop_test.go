package boltstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/refresher/store"
)

// A session record written before DPoP binding existed (no "jkt", no
// "dev") loads as an unbound session, rotates as before, and the first
// rotation with a key binds it; the binding survives a reopen.
func TestRecordWithoutBindingLoads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "tokengate.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// The record exactly as the earlier format wrote it.
	old := `{"id":"s1","sub":"alice","claims":{"a":1},"created_at":"2026-03-01T12:00:00Z","idle_ttl":3600000000000,` +
		`"expires_at":"2026-03-02T12:00:00Z","revoked_at":"0001-01-01T00:00:00Z","generation":0,"first":"h0"}`
	tok := `{"hash":"h0","sid":"s1","generation":0,"issued_at":"2026-03-01T12:00:00Z","expires_at":"2026-03-01T13:00:00Z",` +
		`"rotated_at":"0001-01-01T00:00:00Z","sealed_until":"0001-01-01T00:00:00Z"}`
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSessions).Put([]byte("s1"), []byte(old)); err != nil {
			return err
		}
		return tx.Bucket(bucketTokens).Put([]byte("h0"), []byte(tok))
	})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.GetSession(ctx, "s1")
	if err != nil || sess.JKT != "" || sess.Device != "" || sess.Subject != "alice" {
		t.Fatalf("GetSession = %+v, %v; want alice, unbound", sess, err)
	}
	const jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: "h0", Child: store.Token{Hash: "h1", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		Sealed: []byte("sealed"), Now: t0.Add(time.Minute), Grace: 30 * time.Second, RevokeUntil: t0.Add(15 * time.Minute), JKT: jkt})
	if err != nil || res.Outcome != store.Rotated || res.Session.JKT != jkt {
		t.Fatalf("Rotate = %v (jkt %q), %v; want rotated and bound", res.Outcome, res.Session.JKT, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if sess, err := s.GetSession(ctx, "s1"); err != nil || sess.JKT != jkt {
		t.Fatalf("after reopen: GetSession = %+v, %v; want bound to %s", sess, err, jkt)
	}
}
