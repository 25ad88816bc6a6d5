package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/tokengate/tokengate/refresher/store"
)

var _ store.RateLimiterProvider = (*Store)(nil)

// RateLimiter returns a rate limit kept in Redis, so every replica on this
// Redis shares one budget per key. It is github.com/go-redis/redis_rate's
// GCRA (one Lua script per call, Redis's clock): a key holds one number, the
// instant its budget is full again, and expires then — at most burst/perSecond
// seconds. The key is "rate:" (the library's own prefix) + the store's key
// prefix + "rl:NAME:{KEY}"; the hash tag keeps a session's limit in the
// session's Cluster slot.
func (s *Store) RateLimiter(name string, perSecond float64, burst int) store.RateLimiter {
	interval := time.Duration(float64(time.Second) / perSecond)
	return &rateLimiter{
		lim:      redis_rate.NewLimiter(s.rdb),
		limit:    redis_rate.Limit{Rate: 1, Period: interval, Burst: burst},
		interval: interval,
		prefix:   s.prefix + "rl:" + name + ":{",
		s:        s,
	}
}

type rateLimiter struct {
	lim      *redis_rate.Limiter
	limit    redis_rate.Limit
	interval time.Duration // one attempt's share of the rate
	prefix   string
	s        *Store
}

func (r *rateLimiter) key(k string) string { return r.prefix + k + "}" }

// Wait asks with a cost of zero, which spends nothing: the answer says how
// many attempts remain and when the budget is full again (ResetAfter), so
// the next attempt may go when ResetAfter is down to burst-1 intervals.
func (r *rateLimiter) Wait(ctx context.Context, key string) (time.Duration, error) {
	ctx, cancel := r.s.op(ctx)
	defer cancel()
	res, err := r.lim.AllowN(ctx, r.key(key), r.limit, 0)
	if err != nil {
		return 0, fmt.Errorf("redisstore: rate limit: %w", err)
	}
	if res.Remaining >= 1 {
		return 0, nil
	}
	wait := res.ResetAfter - time.Duration(r.limit.Burst-1)*r.interval
	return max(wait, time.Millisecond), nil
}

// Spend spends one attempt; over the limit it spends nothing.
func (r *rateLimiter) Spend(ctx context.Context, key string) error {
	ctx, cancel := r.s.op(ctx)
	defer cancel()
	if _, err := r.lim.Allow(ctx, r.key(key), r.limit); err != nil {
		return fmt.Errorf("redisstore: rate limit: %w", err)
	}
	return nil
}
