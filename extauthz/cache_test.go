package extauthz

import (
	"testing"
	"time"
)

// Item 10: the verified-token cache.
func TestCacheHitsAndExpiry(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k))
	now := h.clock.Now()
	c := claimsAt(now)
	c["exp"] = now.Add(2 * time.Minute).Unix()
	tok := k.token(t, c)
	for range 3 {
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatalf("check: %s", got)
		}
	}
	if hits, misses := counterValue(t, h.srv.metrics.cacheHits), counterValue(t, h.srv.metrics.cacheMisses); hits != 2 || misses != 1 {
		t.Fatalf("hits %v misses %v, want 2 and 1", hits, misses)
	}
	// x-token-expires-in counts down on hits too.
	h.clock.Advance(90 * time.Second)
	if got := h.check(t, bearerReq(tok)).response["x-token-expires-in"]; got != "30" {
		t.Fatalf("x-token-expires-in on a hit = %s, want 30", got)
	}
	// At exp the entry is gone: the token is verified again (still within leeway).
	h.clock.Advance(30 * time.Second)
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatalf("within leeway: %s", got)
	}
	if misses := counterValue(t, h.srv.metrics.cacheMisses); misses != 2 {
		t.Fatalf("misses %v, want 2: an entry must not outlive exp", misses)
	}
	h.clock.Advance(31 * time.Second)
	if got := h.check(t, bearerReq(tok)).reason(); got != "token_expired" {
		t.Fatalf("after exp + leeway: %s", got)
	}
}

// The cache is bounded: the least recently used entry goes.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.Size = 2
	h := newHarness(t, cfg)
	var toks []string
	for i := range 3 {
		c := claimsAt(h.clock.Now())
		c["jti"] = string(rune('a' + i))
		toks = append(toks, k.token(t, c))
		h.check(t, bearerReq(toks[i]))
	}
	if n := h.srv.state.Load().cache.lru.Len(); n != 2 {
		t.Fatalf("cache holds %d, want 2", n)
	}
	if h.srv.state.Load().cache.lru.Contains(toks[0]) {
		t.Fatal("the oldest entry was kept")
	}
}

func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.Disabled = true
	h := newHarness(t, cfg)
	tok := k.token(t, claimsAt(h.clock.Now()))
	for range 2 {
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatal(got)
		}
	}
	if hits := counterValue(t, h.srv.metrics.cacheHits); hits != 0 {
		t.Fatalf("hits %v with the cache disabled", hits)
	}
}
