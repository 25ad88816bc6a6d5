package e2e

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/internal/proctest"
)

// TestStormAcrossReplicas: 400 concurrent refreshes of one token, sent
// alternately to two replicas on one Redis, make exactly one rotation, and
// every caller receives the same new refresh token.
func TestStormAcrossReplicas(t *testing.T) {
	redis := proctest.StartRedis(t)
	key := signingKey(t)
	a := startRefresher(t, "refresher-a", redis.Addr, key)
	b := startRefresher(t, "refresher-b", redis.Addr, key)
	replicas := []replica{a, b}

	first := createSession(t, a, "storm-user")
	const callers = 400
	answers := make([]answer, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = refresh(replicas[i%2], first.RefreshToken)
		}()
	}
	close(start)
	wg.Wait()

	want := ""
	for i, ans := range answers {
		if ans.Err != nil || ans.Status != http.StatusOK {
			t.Fatalf("caller %d (%s): %v", i, replicas[i%2].Name, ans)
		}
		if want == "" {
			want = ans.Body.RefreshToken
		}
		if ans.Body.RefreshToken != want {
			t.Fatalf("caller %d (%s) got a different refresh token than caller 0", i, replicas[i%2].Name)
		}
		if ans.Body.SessionID != first.SessionID || ans.Body.AccessToken == "" {
			t.Fatalf("caller %d: session %q, access token present %v", i, ans.Body.SessionID, ans.Body.AccessToken != "")
		}
	}
	if want == first.RefreshToken {
		t.Fatal("the storm returned the presented token, not a rotated one")
	}
	rotations := metric(t, a.URL, "tokengate_refresher_rotations_total") + metric(t, b.URL, "tokengate_refresher_rotations_total")
	if rotations != 1 {
		t.Errorf("rotations across both replicas = %v, want exactly 1", rotations)
	}
	// The one new token is the session's current token: it rotates once more.
	if next := refresh(b, want); next.Status != http.StatusOK || next.Body.RefreshToken == want {
		t.Errorf("refreshing the storm's token: %v", next)
	}
}

// TestReuseOnOtherReplica: a rotated token presented after the grace window,
// to the replica that did not rotate it, revokes the session; both replicas'
// feeds then list it, identically.
func TestReuseOnOtherReplica(t *testing.T) {
	const grace = time.Second
	redis := proctest.StartRedis(t)
	key := signingKey(t)
	a := startRefresher(t, "refresher-a", redis.Addr, key, "--reuse-grace", grace.String())
	b := startRefresher(t, "refresher-b", redis.Addr, key, "--reuse-grace", grace.String())

	first := createSession(t, a, "reuse-user")
	rotated := refresh(a, first.RefreshToken)
	if rotated.Status != http.StatusOK {
		t.Fatalf("first refresh: %v", rotated)
	}
	// Within the window the other replica replays the same pair.
	if replay := refresh(b, first.RefreshToken); replay.Status != http.StatusOK || replay.Body.RefreshToken != rotated.Body.RefreshToken {
		t.Fatalf("replay on the other replica within grace: %v (same token: %v)", replay, replay.Body.RefreshToken == rotated.Body.RefreshToken)
	}
	// The grace window is wall-clock time in the processes; let it pass.
	time.Sleep(grace + 200*time.Millisecond)

	reuse := refresh(b, first.RefreshToken)
	if reuse.Status != http.StatusBadRequest || reuse.Body.Error != "invalid_grant" {
		t.Fatalf("reuse after grace on the other replica: %v, want 400 invalid_grant", reuse)
	}
	// The legitimate holder's current token is now refused too, on either replica.
	for _, r := range []replica{a, b} {
		if ans := refresh(r, rotated.Body.RefreshToken); ans.Status != http.StatusBadRequest || ans.Body.Error != "invalid_grant" {
			t.Errorf("current token on %s after reuse: %v, want 400 invalid_grant", r.Name, ans)
		}
	}
	if got := metric(t, b.URL, "tokengate_refresher_reuse_detections_total"); got != 1 {
		t.Errorf("reuse detections on %s = %v, want 1", b.Name, got)
	}
	fa, fb := readFeed(t, a, ""), readFeed(t, b, "")
	if diff := cmp.Diff(fa, fb); diff != "" {
		t.Errorf("the replicas' feeds differ (-a +b):\n%s", diff)
	}
	if len(fa.Revoked) != 1 || fa.Revoked[0].SID != first.SessionID {
		t.Errorf("feed = %+v, want the one revoked session %s", fa.Revoked, first.SessionID)
	}
	if !fa.Revoked[0].Until.After(time.Now()) {
		t.Errorf("feed entry until %v is not in the future", fa.Revoked[0].Until)
	}
}

// TestRedisOutageMidStorm stops redis-server (SIGKILL, by its PID) while
// clients keep refreshing on both replicas: answers are 200 or 503 with
// Retry-After, never invalid_grant; /readyz turns 503; after a restart every
// session refreshes again (none lost, none revoked).
func TestRedisOutageMidStorm(t *testing.T) {
	aof := []string{"--appendonly", "yes", "--appendfsync", "always"}
	redis := proctest.StartRedis(t, aof...)
	key := signingKey(t)
	a := startRefresher(t, "refresher-a", redis.Addr, key, "--redis-timeout", "300ms")
	b := startRefresher(t, "refresher-b", redis.Addr, key, "--redis-timeout", "300ms")
	replicas := []replica{a, b}

	const workers = 16
	tokens := make([]string, workers)
	for i := range tokens {
		tokens[i] = createSession(t, a, "outage-user").RefreshToken
	}

	var (
		successes   atomic.Int64
		unavailable atomic.Int64
		stop        atomic.Bool
		mu          sync.Mutex
		bad         []string
	)
	enoughOK := make(chan struct{})
	enough503 := make(chan struct{})
	var okOnce, failOnce sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				ans := refresh(replicas[(w+i)%2], tokens[w])
				switch {
				case ans.Err == nil && ans.Status == http.StatusOK:
					tokens[w] = ans.Body.RefreshToken
					if successes.Add(1) >= 4*workers {
						okOnce.Do(func() { close(enoughOK) })
					}
				case ans.Err == nil && ans.Status == http.StatusServiceUnavailable && ans.RetryAfter != "":
					// Keep the same token: the rotation may or may not have
					// been stored; a retry is then a replay.
					if unavailable.Add(1) >= 4*workers {
						failOnce.Do(func() { close(enough503) })
					}
				default:
					mu.Lock()
					bad = append(bad, replicas[(w+i)%2].Name+": "+ans.String()+" (Retry-After "+ans.RetryAfter+")")
					mu.Unlock()
				}
			}
		}()
	}
	waitFor := func(ch chan struct{}, what string) {
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			stop.Store(true)
			wg.Wait()
			t.Fatalf("timed out waiting for %s (ok %d, 503 %d, bad %v)", what, successes.Load(), unavailable.Load(), bad)
		}
	}
	waitFor(enoughOK, "refreshes before the outage")
	redis.Stop()
	waitFor(enough503, "503 answers during the outage")
	for _, r := range replicas {
		if got := status(r.URL + "/readyz"); got != http.StatusServiceUnavailable {
			t.Errorf("%s /readyz during the outage = %d, want 503", r.Name, got)
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d answers were neither 200 nor 503+Retry-After, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}

	redis.Restart(aof...)
	for _, r := range replicas {
		r.Proc.WaitHTTP(t, r.URL+"/readyz", http.StatusOK, 30*time.Second)
	}
	for w, tok := range tokens {
		ans := refresh(replicas[w%2], tok)
		if ans.Status != http.StatusOK {
			t.Errorf("session of worker %d after the outage: %v", w, ans)
		}
	}
	t.Logf("before/during the outage: %d refreshes ok, %d answered 503", successes.Load(), unavailable.Load())
}

// TestRefresherStartsWithoutRedis: a refresher whose Redis is down at
// start runs not-ready (503 refreshes, not a crash loop) and becomes ready
// by itself when Redis comes up; the session signed in before is intact.
func TestRefresherStartsWithoutRedis(t *testing.T) {
	aof := []string{"--appendonly", "yes", "--appendfsync", "always"}
	redis := proctest.StartRedis(t, aof...)
	key := signingKey(t)
	first := startRefresher(t, "refresher-first", redis.Addr, key)
	sess := createSession(t, first, "early-user")
	first.Proc.Stop(t)
	redis.Stop()

	r := launchRefresher(t, "refresher", redis.Addr, key, "--redis-timeout", "200ms")
	if got := status(r.URL + "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down = %d, want 503", got)
	}
	if ans := refresh(r, sess.RefreshToken); ans.Status != http.StatusServiceUnavailable || ans.RetryAfter == "" {
		t.Errorf("refresh with Redis down: %v (Retry-After %q), want 503 with Retry-After", ans, ans.RetryAfter)
	}
	redis.Restart(aof...)
	r.Proc.WaitHTTP(t, r.URL+"/readyz", http.StatusOK, 30*time.Second)
	if ans := refresh(r, sess.RefreshToken); ans.Status != http.StatusOK {
		t.Errorf("refresh after Redis came up: %v", ans)
	}
}
