package refresher_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store"
)

// With Redis the limits hold across replicas: burst 5 allows 5 counted
// attempts in total over both replicas, the 6th is 429 on either. Replays
// still pass on both (from the store or the LRU); a new rotation does not.
func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	r := proctest.StartRedis(t)
	st := openRedis(t, "redis://"+r.Addr)
	keys, clock := generateKeys(t), fakeclock.New()
	limits := withConfig(func(c *refresher.Config) {
		c.RateLimitIP, c.RateLimitIPBurst = 0.01, 5 // one per 100 s: nothing refills during the test
		c.RateLimitSession = 0
	})
	a := newRig(t, withStore(st), withKeys(keys), withClock(clock), limits)
	b := newRig(t, withStore(st), withKeys(keys), withClock(clock), limits)
	t0 := a.startSession("").str("refresh_token")
	fromA := a.refresh(t0) // 1 counted (a rotation) on A
	if fromA.Status != http.StatusOK {
		t.Fatalf("rotation on A = %d %s", fromA.Status, fromA.Raw)
	}
	for i, rg := range []*rig{b, a, b, a} { // 4 counted failures, alternating
		if got := rg.refresh("tgr1_" + strings.Repeat(string(rune('F'+i)), 43)); got.str("error") != "invalid_grant" {
			t.Fatalf("failure %d = %d %s", i, got.Status, got.Raw)
		}
	}
	for name, rg := range map[string]*rig{"A": a, "B": b} {
		got := rg.refresh("tgr1_" + strings.Repeat("Z", 43))
		ra, _ := strconv.Atoi(got.Header.Get("Retry-After"))
		if got.Status != http.StatusTooManyRequests || ra < 99 || ra > 100 {
			t.Errorf("6th attempt on %s = %d %s Retry-After %q; want 429 with about 100", name, got.Status, got.Raw, got.Header.Get("Retry-After"))
		}
		if n := rg.counter("tokengate_refresher_rate_limited_total", "scope", "ip"); n != 1 {
			t.Errorf("rate_limited{ip} on %s = %v, want 1", name, n)
		}
	}
	// Replays are never limited: from the store on B, from the LRU on A.
	for name, rg := range map[string]*rig{"B": b, "A": a} {
		if got := rg.refresh(t0); got.Status != http.StatusOK || got.str("refresh_token") != fromA.str("refresh_token") {
			t.Errorf("replay on %s while limited = %d %s", name, got.Status, got.Raw)
		}
	}
	if got := b.refresh(fromA.str("refresh_token")); got.Status != http.StatusTooManyRequests {
		t.Errorf("a new rotation on B = %d %s, want 429", got.Status, got.Raw)
	}
	// One key, with a bounded expiry (the time the budget is full again).
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	ttl, err := rdb.TTL(context.Background(), "rate:tokengate:rl:ip:{127.0.0.1}").Result()
	if err != nil || ttl <= 0 || ttl > 500*time.Second {
		t.Errorf("limit key TTL = %v, %v; want within (0, 500 s]", ttl, err)
	}
	if n := a.counter("tokengate_refresher_rate_limit_errors_total") + b.counter("tokengate_refresher_rate_limit_errors_total"); n != 0 {
		t.Errorf("rate_limit_errors = %v, want 0", n)
	}
}

// A shared limiter that fails lets requests through (fail open), counts
// the failure and warns once: here the Redis user may write the store's
// keys but not the limiter's (an ACL written for the key prefix only).
func TestRateLimitFailsOpen(t *testing.T) {
	t.Parallel()
	r := proctest.StartRedis(t, "--user", "tg", "on", ">secret-pw", "~tokengate:*", "+@all")
	st := openRedis(t, "redis://tg:secret-pw@"+r.Addr)
	rg := newRig(t, withStore(st), withConfig(func(c *refresher.Config) {
		c.RateLimitIP, c.RateLimitIPBurst = 0.01, 1
	}))
	tok := rg.startSession("").str("refresh_token")
	for i := range 3 {
		got := rg.refresh(tok)
		if got.Status != http.StatusOK {
			t.Fatalf("rotation %d with the limiter failing = %d %s; want 200", i, got.Status, got.Raw)
		}
		tok = got.str("refresh_token")
	}
	if n := rg.counter("tokengate_refresher_rate_limit_errors_total", "scope", "ip"); n < 3 {
		t.Errorf("rate_limit_errors{ip} = %v, want at least 3", n)
	}
	if n := strings.Count(rg.logs.String(), "rate limit unavailable"); n != 2 { // once per limit: ip, session
		t.Errorf("%d warnings, want one per limit:\n%s", n, rg.logs.String())
	}
	if strings.Contains(rg.logs.String(), "secret-pw") {
		t.Error("the Redis password reached the logs")
	}
}

func openRedis(t *testing.T, uri string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), uri, store.OpenOptions{RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A client IP longer than 64 bytes (a proxy's header filled with junk) is
// keyed by its SHA-256, so limit keys stay small in Redis and in process.
func TestRateLimitLongClientIPKey(t *testing.T) {
	t.Parallel()
	r := proctest.StartRedis(t)
	rg := newRig(t, withStore(openRedis(t, "redis://"+r.Addr)), withConfig(func(c *refresher.Config) {
		c.ClientIPHeader = "x-real-ip"
		c.RateLimitIP, c.RateLimitIPBurst = 0.01, 5
	}))
	long := strings.Repeat("1", 4000)
	if got := rg.do(rg.request("POST", "/v1/token", "application/x-www-form-urlencoded",
		"grant_type=refresh_token&refresh_token=tgr1_"+strings.Repeat("Q", 43), "X-Real-IP", long)); got.str("error") != "invalid_grant" {
		t.Fatalf("refresh = %d %s", got.Status, got.Raw)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "rate:*").Result()
	if err != nil || len(keys) != 1 || !strings.HasPrefix(keys[0], "rate:tokengate:rl:ip:{sha256:") || len(keys[0]) > 120 {
		t.Errorf("limit keys = %q, %v; want one rate:tokengate:rl:ip:{sha256:…}", keys, err)
	}
}
