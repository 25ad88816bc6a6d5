package redisstore_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// TestStalledRotationNotAppliedLate is the store-level core of the stall:
// a rotation script sent to a stopped Redis (SIGSTOP) outlives its caller,
// who got a timeout; when Redis resumes it must not apply it, so the
// caller's retry — later than the grace window after the first attempt —
// rotates instead of being judged reuse.
func TestStalledRotationNotAppliedLate(t *testing.T) {
	r := proctest.StartRedis(t)
	t.Cleanup(func() { r.Proc.Signal(syscall.SIGCONT) })
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const grace = 2 * time.Second
	now := time.Now().UTC()
	newSession := func(sid string) store.Token {
		sess := store.Session{ID: sid, Subject: "u", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
		first := store.Token{Hash: "first-" + sid, SessionID: sid, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.CreateSession(ctx, sess, first); err != nil {
			t.Fatal(err)
		}
		return first
	}
	rotate := func(parent, child string, at time.Time) (store.RotateResult, error) {
		return s.Rotate(ctx, store.RotateRequest{ParentHash: parent, Sealed: []byte("pair-" + child), Now: at, Grace: grace,
			RevokeUntil: at.Add(15 * time.Minute), Child: store.Token{Hash: child, IssuedAt: at, ExpiresAt: at.Add(time.Hour)}})
	}
	// One rotation first, so Redis has the script loaded (EVALSHA): a
	// queued EVALSHA of an unknown script would fail harmlessly.
	warm := newSession("warm")
	if res, err := rotate(warm.Hash, "warm-child", now); err != nil || res.Outcome != store.Rotated {
		t.Fatalf("warm-up rotation = %v, %v", res.Outcome, err)
	}
	first := newSession("stalled")

	if err := r.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if res, err := rotate(first.Hash, "lost-child", now); err == nil {
		t.Fatalf("Rotate against a stopped Redis = %v, want an error", res.Outcome)
	}
	if err := r.Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// A round trip on a fresh connection: Redis has read (and run, or
	// refused) what was queued on the old one before it answers this.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.GetToken(ctx, first.Hash); err != nil || !tok.RotatedAt.IsZero() {
		t.Errorf("after the stall the token is %+v, %v; want it unrotated (the caller was told 503)", tok, err)
	}
	// The client's retry, later than the grace window after its first try.
	res, err := rotate(first.Hash, "retry-child", now.Add(grace+time.Second))
	if err != nil || res.Outcome != store.Rotated {
		t.Errorf("the retry after the stall = %v, %v; want rotated", res.Outcome, err)
	}
	if sess, err := s.GetSession(ctx, "stalled"); err != nil || !sess.RevokedAt.IsZero() {
		t.Errorf("session after the stall = %+v, %v; want active", sess, err)
	}
}

// TestLateRotationAndClockCorrection: with the clock estimate 10 s off
// (Redis's deadline then looks long past), the script refuses: Rotate
// returns ErrLate and nothing is rotated. Its reply carries Redis's TIME,
// which corrects the estimate, so the retry rotates.
func TestLateRotationAndClockCorrection(t *testing.T) {
	r := proctest.StartRedis(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC()
	sess := store.Session{ID: "skew", Subject: "u", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	first := store.Token{Hash: "first-skew", SessionID: sess.ID, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess, first); err != nil {
		t.Fatal(err)
	}
	req := store.RotateRequest{ParentHash: first.Hash, Sealed: []byte("p"), Now: now, Grace: time.Second,
		RevokeUntil: now.Add(time.Minute), Child: store.Token{Hash: "child-skew", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}}

	redisstore.SetClockOffset(s, -10*time.Second)
	if res, err := s.Rotate(ctx, req); !errors.Is(err, redisstore.ErrLate) {
		t.Fatalf("Rotate with the clock estimate 10 s off = %v, %v; want ErrLate", res.Outcome, err)
	}
	if tok, err := s.GetToken(ctx, first.Hash); err != nil || !tok.RotatedAt.IsZero() {
		t.Fatalf("after a late refusal the token is %+v, %v; want it unrotated", tok, err)
	}
	if res, err := s.Rotate(ctx, req); err != nil || res.Outcome != store.Rotated {
		t.Errorf("the retry = %v, %v; want rotated (the refusal's reply corrected the estimate)", res.Outcome, err)
	}
}
