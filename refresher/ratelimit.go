package refresher

import (
	"math"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (client IP or sid). It counts only
// what abuse produces — rotations and failed attempts — and is checked before
// the work starts, so replays (answered from the recent pairs) never spend or
// need a token. Buckets live in a bounded LRU: a flood of distinct keys
// evicts old buckets instead of growing memory.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	lru   *lru.Cache[string, *rate.Limiter]
}

const limiterKeys = 100_000

func newKeyedLimiter(perSecond float64, burst int) *keyedLimiter {
	if perSecond <= 0 {
		return nil
	}
	c, _ := lru.New[string, *rate.Limiter](limiterKeys) // only fails for size ≤ 0
	return &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, lru: c}
}

func (k *keyedLimiter) get(key string) *rate.Limiter {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.lru.Get(key)
	if !ok {
		l = rate.NewLimiter(k.limit, k.burst)
		k.lru.Add(key, l)
	}
	return l
}

// wait returns zero when key may make a counted attempt at now, otherwise
// how long until it may (the Retry-After).
func (k *keyedLimiter) wait(key string, now time.Time) time.Duration {
	if k == nil || key == "" {
		return 0
	}
	l := k.get(key)
	tokens := l.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) / float64(k.limit) * float64(time.Second)))
}

// count spends one token of key's bucket (if one is left).
func (k *keyedLimiter) count(key string, now time.Time) {
	if k == nil || key == "" {
		return
	}
	k.get(key).AllowN(now, 1)
}
