package refresher

import (
	"context"
	"math"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/tokengate/tokengate/refresher/store"
)

// keyedLimiter is the in-process store.RateLimiter, for stores of one
// process (memory, bolt): a token bucket per key (client IP or sid). Buckets
// live in a bounded LRU: a flood of distinct keys evicts old buckets instead
// of growing memory.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time
	mu    sync.Mutex
	lru   *lru.Cache[string, *rate.Limiter]
}

var _ store.RateLimiter = (*keyedLimiter)(nil)

const limiterKeys = 100_000

func newKeyedLimiter(perSecond float64, burst int, now func() time.Time) *keyedLimiter {
	c, _ := lru.New[string, *rate.Limiter](limiterKeys) // only fails for size ≤ 0
	return &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, now: now, lru: c}
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

// Wait returns zero when key may make a counted attempt now, otherwise how
// long until it may (the Retry-After).
func (k *keyedLimiter) Wait(_ context.Context, key string) (time.Duration, error) {
	tokens := k.get(key).TokensAt(k.now())
	if tokens >= 1 {
		return 0, nil
	}
	return time.Duration(math.Ceil((1 - tokens) / float64(k.limit) * float64(time.Second))), nil
}

// Spend spends one token of key's bucket (if one is left).
func (k *keyedLimiter) Spend(_ context.Context, key string) error {
	k.get(key).AllowN(k.now(), 1)
	return nil
}
