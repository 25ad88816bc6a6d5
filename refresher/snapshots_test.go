package refresher_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// Two replicas A and B on one real Redis, one clock, no rate limits (on
// Redis they run on Redis's clock, which the fake clock does not move).
// A rotates the tokens it issued from its snapshot of the session in one
// store call; whatever happened to the session on B in between must show.
func snapshotReplicas(t *testing.T) (a, b *rig, st *redisstore.Store, clock *fakeclock.Clock) {
	t.Helper()
	st = openStore(t, "redis").(*redisstore.Store)
	clock, keys := fakeclock.New(), generateKeys(t)
	noLimits := withConfig(func(c *refresher.Config) { c.RateLimitIP, c.RateLimitSession = 0, 0 })
	a = newRig(t, withStore(st), withKeys(keys), withClock(clock), noLimits)
	b = newRig(t, withStore(st), withKeys(keys), withClock(clock), noLimits)
	return a, b, st, clock
}

// Claims replaced on another replica between two rotations: the next
// access token A mints carries the new claims.
func TestSnapshotClaimsPatchedElsewhere(t *testing.T) {
	t.Parallel()
	a, b, _, clock := snapshotReplicas(t)
	first := a.startSession(`{"sub":"alice","claims":{"roles":["viewer"]}}`)
	sid := first.str("session_id")
	r0 := a.refresh(first.str("refresh_token"))
	if r0.Status != http.StatusOK {
		t.Fatalf("first refresh = %d %s", r0.Status, r0.Raw)
	}
	if p := b.admin("PATCH", "/v1/sessions/"+sid, `{"claims":{"roles":["admin"],"name":"Alice"}}`); p.Status != http.StatusOK {
		t.Fatalf("PATCH on B = %d %s", p.Status, p.Raw)
	}
	clock.Advance(time.Second)
	r1 := a.refresh(r0.str("refresh_token"))
	if r1.Status != http.StatusOK {
		t.Fatalf("refresh after the PATCH = %d %s", r1.Status, r1.Raw)
	}
	_, claims, err := a.verify(r1.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]any{"admin"}, claims["roles"]); d != "" || claims["name"] != "Alice" {
		t.Errorf("claims after a PATCH on another replica: %v", claims)
	}
	// And the chain goes on from the new claims, on the fast path again.
	r2 := a.refresh(r1.str("refresh_token"))
	if _, claims, err = a.verify(r2.str("access_token")); err != nil || claims["name"] != "Alice" {
		t.Errorf("next refresh: %d, claims %v, error %v", r2.Status, claims, err)
	}
}

// A session revoked on another replica: A's next rotation is refused.
func TestSnapshotRevokedElsewhere(t *testing.T) {
	t.Parallel()
	a, b, _, _ := snapshotReplicas(t)
	first := a.startSession("")
	sid := first.str("session_id")
	r0 := a.refresh(first.str("refresh_token"))
	if r0.Status != http.StatusOK {
		t.Fatalf("first refresh = %d %s", r0.Status, r0.Raw)
	}
	if d := b.admin("DELETE", "/v1/sessions/"+sid, ""); d.Status != http.StatusOK && d.Status != http.StatusNoContent {
		t.Fatalf("DELETE on B = %d %s", d.Status, d.Raw)
	}
	got := a.refresh(r0.str("refresh_token"))
	if got.Status != http.StatusBadRequest || got.str("error") != "invalid_grant" {
		t.Errorf("refresh of a session revoked on B = %d %s, want 400 invalid_grant", got.Status, got.Raw)
	}
	if n := a.counter("tokengate_refresher_refresh_failures_total", "reason", "revoked"); n != 1 {
		t.Errorf("failures{reason=revoked} = %v, want 1", n)
	}
}

// A token A issued and B rotated: presented again to A it is a replay
// inside the grace window (the pair B issued) and reuse after it (the
// session is revoked), as without the snapshot.
func TestSnapshotRotatedElsewhere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		advance time.Duration
		status  int
	}{
		{"replay inside the grace window", time.Second, http.StatusOK},
		{"reuse after the grace window", time.Hour / 2, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b, _, clock := snapshotReplicas(t)
			first := a.startSession("")
			sid := first.str("session_id")
			r0 := a.refresh(first.str("refresh_token"))
			r1 := b.refresh(r0.str("refresh_token"))
			if r0.Status != http.StatusOK || r1.Status != http.StatusOK {
				t.Fatalf("refreshes = %d, %d", r0.Status, r1.Status)
			}
			clock.Advance(tc.advance)
			got := a.refresh(r0.str("refresh_token"))
			if got.Status != tc.status {
				t.Fatalf("A's refresh of the token B rotated = %d %s, want %d", got.Status, got.Raw, tc.status)
			}
			revoked := !a.session(sid).RevokedAt.IsZero()
			if tc.status == http.StatusOK {
				if got.str("refresh_token") != r1.str("refresh_token") || got.str("access_token") != r1.str("access_token") {
					t.Errorf("replay on A answered another pair than B issued")
				}
				if revoked {
					t.Errorf("session revoked by a replay")
				}
				return
			}
			if got.str("error") != "invalid_grant" || !revoked {
				t.Errorf("reuse: %s, session revoked %v; want invalid_grant and revoked", got.Raw, revoked)
			}
		})
	}
}

// commandLog records the commands a go-redis client sends, one entry per
// round trip (a pipeline is one).
type commandLog struct {
	mu   sync.Mutex
	trip [][]string
}

func (l *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add(cmd)
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.add(cmds...)
		return next(ctx, cmds)
	}
}

func (l *commandLog) add(cmds ...redis.Cmder) {
	var names []string
	for _, c := range cmds {
		switch c.Name() {
		case "hello", "client", "auth", "select":
			// The handshake of a connection the pool opens, not a command
			// of the operation.
			continue
		}
		names = append(names, c.Name())
	}
	if len(names) == 0 {
		return
	}
	l.mu.Lock()
	l.trip = append(l.trip, names)
	l.mu.Unlock()
}

// take returns the round trips so far and starts a new log.
func (l *commandLog) take() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.trip
	l.trip = nil
	return t
}

// A warm rotation on Redis — a refresh token this replica issued — is
// exactly one round trip: the rotation script, nothing read before it. A
// token another replica issued takes the ordinary path: the token and its
// session in one pipeline, then the script.
func TestRedisWarmRotationIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	a, b, st, _ := snapshotReplicas(t)
	log := &commandLog{}
	st.Client().AddHook(log)

	// Warm: the script is loaded and Redis's clock sampled.
	tok := a.refresh(a.startSession("").str("refresh_token")).str("refresh_token")
	log.take()
	for range 3 {
		got := a.refresh(tok)
		if got.Status != http.StatusOK {
			t.Fatalf("refresh = %d %s", got.Status, got.Raw)
		}
		tok = got.str("refresh_token")
		if trips := log.take(); !slices.EqualFunc(trips, [][]string{{"evalsha"}}, slices.Equal) {
			t.Errorf("a warm rotation's round trips = %v, want one: [[evalsha]]", trips)
		}
	}

	// The same token on the replica that did not issue it.
	got := b.refresh(tok)
	if got.Status != http.StatusOK {
		t.Fatalf("refresh on B = %d %s", got.Status, got.Raw)
	}
	want := [][]string{{"hget", "hgetall", "get"}, {"evalsha"}}
	if trips := log.take(); !slices.EqualFunc(trips, want, slices.Equal) {
		t.Errorf("a rotation on the other replica: round trips %v, want %v", trips, want)
	}
}
