package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

// openURL opens a fresh store at url: each gets its own key prefix, so the
// suite's parallel subtests (and the revocation feed they compare exactly)
// do not see each other on one server.
func openURL(t *testing.T, url string) *redisstore.Store {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	s, err := redisstore.Open(context.Background(), url,
		redisstore.Options{KeyPrefix: "test-" + hex.EncodeToString(b) + ":"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	return s
}

func openOn(r *proctest.Redis, split bool) func(t *testing.T) store.Store {
	return func(t *testing.T) store.Store {
		t.Helper()
		s := openURL(t, "redis://"+r.Addr+"/0")
		if split {
			redisstore.SplitKeys(s)
		}
		return s
	}
}

func TestConformance(t *testing.T) {
	r := proctest.StartRedis(t)
	storetest.Run(t, openOn(r, false))
}

// TestConformanceClusterPath runs the suite with the Cluster write path
// (index, subject and feed keys written outside the session's script).
func TestConformanceClusterPath(t *testing.T) {
	r := proctest.StartRedis(t)
	storetest.Run(t, openOn(r, true))
}

// TestTwoReplicas: two Store instances (two refresher replicas) on one
// Redis race on one parent: exactly one rotates, every other caller gets
// its sealed pair; and both read the same feed with the same cursors.
func TestTwoReplicas(t *testing.T) {
	r := proctest.StartRedis(t)
	ctx := context.Background()
	var replicas [2]*redisstore.Store
	for i := range replicas {
		s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{KeyPrefix: "two:"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		replicas[i] = s
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sess := store.Session{ID: "two-sid", Subject: "u1", Claims: []byte(`{"a":1}`), CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	first := store.Token{Hash: "ee55", SessionID: sess.ID, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := replicas[0].CreateSession(ctx, sess, first); err != nil {
		t.Fatal(err)
	}

	const callers = 64
	results := make([]store.RotateResult, callers)
	sealed := make([][]byte, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		sealed[i] = []byte("pair-" + strconv.Itoa(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req := store.RotateRequest{ParentHash: first.Hash, Sealed: sealed[i], Now: now.Add(time.Minute), Grace: 30 * time.Second,
				RevokeUntil: now.Add(16 * time.Minute), Child: store.Token{Hash: "child-" + strconv.Itoa(i), IssuedAt: now, ExpiresAt: now.Add(time.Hour)}}
			res, err := replicas[i%2].Rotate(ctx, req)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			results[i] = res
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, res := range results {
		if res.Outcome == store.Rotated {
			if winner >= 0 {
				t.Fatalf("callers %d and %d both rotated", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("nobody rotated")
	}
	for i, res := range results {
		if i != winner && (res.Outcome != store.Replayed || string(res.Sealed) != string(sealed[winner])) {
			t.Errorf("caller %d on replica %d: %v %q, want replayed %q", i, i%2, res.Outcome, res.Sealed, sealed[winner])
		}
	}

	// The other replica sees the child (no in-process cache involved).
	other := replicas[(winner+1)%2]
	if tok, err := other.GetToken(ctx, "child-"+strconv.Itoa(winner)); err != nil || tok.Generation != 1 {
		t.Errorf("child on the other replica = %+v, %v", tok, err)
	}
	if _, err := replicas[1].RevokeSession(ctx, sess.ID, now.Add(2*time.Minute), now.Add(17*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var feeds [2][]store.Revocation
	var cursors [2]string
	for i, s := range replicas {
		var err error
		if feeds[i], cursors[i], err = s.Revocations(ctx, "", now, 0); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff(feeds[0], feeds[1]); d != "" || cursors[0] != cursors[1] || len(feeds[0]) != 1 {
		t.Errorf("feeds differ or are not one entry: cursors %q/%q (-0 +1):\n%s", cursors[0], cursors[1], d)
	}
}

// TestEveryKeyExpires: after every kind of write (sign-in, rotation,
// replay, reuse, claims update, sign-out, revoke-all), on both write paths,
// every key the store left has a TTL, so nothing outlives its session.
func TestEveryKeyExpires(t *testing.T) {
	r := proctest.StartRedis(t)
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			ctx := context.Background()
			prefix := fmt.Sprintf("ttl-%v:", split)
			s, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if split {
				redisstore.SplitKeys(s)
			}
			now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			for i := range 3 {
				sid := "sid-" + strconv.Itoa(i)
				sess := store.Session{ID: sid, Subject: "alice", Claims: []byte(`{"x":1}`), CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
				first := store.Token{Hash: "first-" + sid, SessionID: sid, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
				if err := s.CreateSession(ctx, sess, first); err != nil {
					t.Fatal(err)
				}
				rot := func(parent, child string, at time.Time) store.Outcome {
					res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: parent, Sealed: []byte("p"), Now: at, Grace: time.Second,
						RevokeUntil: at.Add(15 * time.Minute), Child: store.Token{Hash: child, IssuedAt: at, ExpiresAt: at.Add(time.Hour)}})
					if err != nil {
						t.Fatal(err)
					}
					return res.Outcome
				}
				rot(first.Hash, "c1-"+sid, now.Add(time.Minute))
				rot(first.Hash, "x-"+sid, now.Add(time.Minute)) // replay
				if _, err := s.PatchClaims(ctx, sid, []byte(`{"x":2}`), now.Add(2*time.Minute)); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					rot(first.Hash, "x2-"+sid, now.Add(time.Hour)) // reuse: revokes
				}
				if i == 1 {
					s.RevokeSession(ctx, sid, now.Add(3*time.Minute), now.Add(18*time.Minute))
				}
			}
			if _, err := s.RevokeSubject(ctx, "alice", now.Add(4*time.Minute), now.Add(19*time.Minute)); err != nil {
				t.Fatal(err)
			}
			keys, err := s.Client().Keys(ctx, prefix+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) < 10 {
				t.Fatalf("only %d keys written: %v", len(keys), keys)
			}
			for _, k := range keys {
				if ttl, err := s.Client().PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
					t.Errorf("key %s: TTL %v, %v; want an expiry", k, ttl, err)
				}
			}
		})
	}
}
