package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
)

func createSessions(t testing.TB, s store.Store, n int) {
	t.Helper()
	for i := range n {
		sid := fmt.Sprintf("s%d", i)
		sess := store.Session{ID: sid, Subject: "alice", CreatedAt: t0, IdleTTL: time.Hour, ExpiresAt: t0.Add(24 * time.Hour)}
		if err := s.CreateSession(context.Background(), sess, store.Token{Hash: sid + "-0", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}

func rotateReq(parent, child string, now time.Time) store.RotateRequest {
	return store.RotateRequest{ParentHash: parent, Child: store.Token{Hash: child, IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		Sealed: []byte("sealed " + child), Now: now, Grace: grace, RevokeUntil: now.Add(15 * time.Minute)}
}

// Concurrent rotations share transactions and still decide as if they ran
// one after the other: N sessions rotate at once, some by several clients
// presenting the same parent together, and some requests collide with an
// existing token hash (an error inside a shared transaction). Each parent
// rotates exactly once, the others replay its pair, the colliding requests
// fail alone, and the file holds exactly the chains that were answered,
// also after reopening.
func TestConcurrentRotations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokengate.db")
	s := open(t, path)
	s.NoSync()
	const sessions, rounds = 24, 12
	createSessions(t, s, sessions)
	clients := func(i int) int { return 1 + i%4 } // 1 to 4 clients present each parent together

	type answer struct {
		res store.RotateResult
		err error
	}
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := fmt.Sprintf("s%d", i)
			parent := sid + "-0"
			for r := 1; r <= rounds; r++ {
				now := t0.Add(time.Duration(r) * time.Second)
				n := clients(i)
				answers := make([]answer, n+1)
				var round sync.WaitGroup
				for c := range n {
					round.Add(1)
					go func() {
						defer round.Done()
						res, err := s.Rotate(ctx, rotateReq(parent, fmt.Sprintf("%s-%d-%d", sid, r, c), now))
						answers[c] = answer{res, err}
					}()
				}
				// A request whose child hash already exists (another
				// session's first token) fails inside the shared
				// transaction, alone.
				round.Add(1)
				go func() {
					defer round.Done()
					res, err := s.Rotate(ctx, rotateReq(parent, fmt.Sprintf("s%d-0", (i+1)%sessions), now))
					answers[n] = answer{res, err}
				}()
				round.Wait()

				collide := answers[n]
				if collide.err == nil && collide.res.Outcome == store.Rotated {
					errs <- fmt.Errorf("%s round %d: rotation into an existing hash answered rotated", sid, r)
					return
				}
				winner := -1
				for c, a := range answers[:n] {
					if a.err != nil {
						errs <- fmt.Errorf("%s round %d client %d: %w", sid, r, c, a.err)
						return
					}
					if a.res.Outcome == store.Rotated {
						if winner >= 0 {
							errs <- fmt.Errorf("%s round %d: parent rotated twice", sid, r)
							return
						}
						winner = c
					}
				}
				if winner < 0 {
					errs <- fmt.Errorf("%s round %d: no client rotated (colliding request: %v, %v)", sid, r, collide.res.Outcome, collide.err)
					return
				}
				child := fmt.Sprintf("%s-%d-%d", sid, r, winner)
				for c, a := range answers[:n] {
					if c != winner && (a.res.Outcome != store.Replayed || string(a.res.Sealed) != "sealed "+child) {
						errs <- fmt.Errorf("%s round %d client %d: %v %q, want replayed %q", sid, r, c, a.res.Outcome, a.res.Sealed, "sealed "+child)
						return
					}
				}
				if collide.err == nil && (collide.res.Outcome != store.Replayed || string(collide.res.Sealed) != "sealed "+child) {
					errs <- fmt.Errorf("%s round %d colliding request: %v %q, want store.ErrExists or replayed", sid, r, collide.res.Outcome, collide.res.Sealed)
					return
				}
				if collide.err != nil && !errors.Is(collide.err, store.ErrExists) {
					errs <- fmt.Errorf("%s round %d colliding request: %w, want store.ErrExists", sid, r, collide.err)
					return
				}
				parent = child
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}

	check := func(s *boltstore.Store) {
		t.Helper()
		for i := range sessions {
			sid := fmt.Sprintf("s%d", i)
			sess, err := s.GetSession(ctx, sid)
			if err != nil || sess.Generation != rounds || !sess.RevokedAt.IsZero() {
				t.Fatalf("session %s = %+v, %v; want generation %d, not revoked", sid, sess, err, rounds)
			}
			hash := sid + "-0"
			for gen := uint64(0); ; gen++ {
				tok, err := s.GetToken(ctx, hash)
				if err != nil || tok.Generation != gen || tok.SessionID != sid {
					t.Fatalf("token %s = %+v, %v; want generation %d of %s", hash, tok, err, gen, sid)
				}
				if gen == rounds {
					if tok.ChildHash != "" || !tok.RotatedAt.IsZero() {
						t.Fatalf("current token %s rotated: %+v", hash, tok)
					}
					break
				}
				if tok.ChildHash == "" {
					t.Fatalf("token %s of generation %d has no child", hash, gen)
				}
				hash = tok.ChildHash
			}
		}
		// Every token stored is a chain member: sessions × (rounds + 1);
		// no loser's child was written.
		if got, want := s.BucketLens()["tokens"], sessions*(rounds+1); got != want {
			t.Fatalf("%d tokens stored, want %d", got, want)
		}
		if revs, _, err := s.Revocations(ctx, "", t0, 0); err != nil || len(revs) != 0 {
			t.Fatalf("feed = %v, %v; want empty", revs, err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	check(s)
}

// waitGroupState yields until the store's group commit is in the wanted
// state (no sleeping: the goroutines it waits for are runnable).
func waitGroupState(s *boltstore.Store, leading bool, queued int) {
	for {
		l, q, _ := s.GroupState()
		if l == leading && q == queued {
			return
		}
		runtime.Gosched()
	}
}

// Rotations that arrive while a commit runs share the next transaction, one
// of them failing inside it: the failing one gets its own error, the others
// commit together, and two rotations of the same parent in one transaction
// decide rotated and replayed.
func TestGroupCommitShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "tokengate.db"))
	defer s.Close()
	createSessions(t, s, 4)
	_, _, before := s.GroupState()

	release := s.HoldWrites()
	type answer struct {
		res store.RotateResult
		err error
	}
	reqs := []store.RotateRequest{
		rotateReq("s0-0", "a", t0),    // leads, waits for the held transaction
		rotateReq("s1-0", "b1", t0),   // these four queue for the next one
		rotateReq("s1-0", "b2", t0),   // same parent as b1
		rotateReq("s2-0", "s3-0", t0), // child hash exists: store.ErrExists
		rotateReq("s3-0", "d", t0),
	}
	answers := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Rotate(ctx, req)
			answers[i] = answer{res, err}
		}()
		if i == 0 {
			waitGroupState(s, true, 0)
		}
	}
	waitGroupState(s, true, len(reqs)-1)
	release()
	wg.Wait()

	if a := answers[0]; a.err != nil || a.res.Outcome != store.Rotated {
		t.Errorf("s0: %v, %v; want rotated", a.res.Outcome, a.err)
	}
	b1, b2 := answers[1], answers[2]
	if b1.err != nil || b2.err != nil {
		t.Fatalf("s1: %v, %v", b1.err, b2.err)
	}
	if b1.res.Outcome == store.Replayed {
		b1, b2 = b2, b1
	}
	winner := b1.res.Parent.ChildHash
	if b1.res.Outcome != store.Rotated || b2.res.Outcome != store.Replayed || string(b2.res.Sealed) != "sealed "+winner {
		t.Errorf("s1: %v and %v %q; want rotated and replayed %q", b1.res.Outcome, b2.res.Outcome, b2.res.Sealed, "sealed "+winner)
	}
	if a := answers[3]; !errors.Is(a.err, store.ErrExists) {
		t.Errorf("s2 into an existing hash: %v, %v; want store.ErrExists", a.res.Outcome, a.err)
	}
	if a := answers[4]; a.err != nil || a.res.Outcome != store.Rotated {
		t.Errorf("s3: %v, %v; want rotated", a.res.Outcome, a.err)
	}
	// One transaction for s0, one shared by the three that succeeded.
	if _, _, after := s.GroupState(); after-before != 2 {
		t.Errorf("%d transactions committed for the five rotations, want 2", after-before)
	}
	for sid, gen := range map[string]uint64{"s0": 1, "s1": 1, "s2": 0, "s3": 1} {
		if sess, err := s.GetSession(ctx, sid); err != nil || sess.Generation != gen {
			t.Errorf("session %s: generation %d, %v; want %d", sid, sess.Generation, err, gen)
		}
	}
	for _, h := range []string{"a", winner, "d"} {
		if _, err := s.GetToken(ctx, h); err != nil {
			t.Errorf("token %s: %v", h, err)
		}
	}
	if got, want := s.BucketLens()["tokens"], 4+3; got != want {
		t.Errorf("%d tokens stored, want %d", got, want)
	}
}

// BenchmarkBoltRotateConcurrent: 64 sessions (or 1) refreshing at once,
// each by its own goroutine rotating along its chain in a loop, with fsync
// on every commit. solo is one transaction per rotation (the code before
// group commits), group shares transactions among the rotations waiting.
func BenchmarkBoltRotateConcurrent(b *testing.B) {
	for _, sessions := range []int{64, 1} {
		for _, mode := range []string{"solo", "group"} {
			b.Run(fmt.Sprintf("sessions=%d/%s", sessions, mode), func(b *testing.B) {
				benchRotate(b, sessions, mode == "solo")
			})
		}
	}
}

func benchRotate(b *testing.B, sessions int, solo bool) {
	s, err := boltstore.Open(filepath.Join(b.TempDir(), "tokengate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if solo {
		s.SoloCommits()
	}
	createSessions(b, s, sessions)
	var left atomic.Int64
	left.Store(int64(b.N))
	ctx := context.Background()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := fmt.Sprintf("s%d", i)
			parent := sid + "-0"
			for r := 1; left.Add(-1) >= 0; r++ {
				child := fmt.Sprintf("%s-%d", sid, r)
				res, err := s.Rotate(ctx, rotateReq(parent, child, t0.Add(time.Duration(r)*time.Millisecond)))
				if err != nil || res.Outcome != store.Rotated {
					b.Errorf("rotate %s: %v, %v", parent, res.Outcome, err)
					return
				}
				parent = child
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rotations/s")
}
