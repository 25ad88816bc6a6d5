package refresher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/refresher/store"
)

// limit is one rate limit (per client IP or per session) as the issuer uses
// it. It counts only what abuse produces — rotations and failed attempts —
// and is checked before the work starts, so replays (answered from the
// recent pairs or the store) never spend or need a token.
//
// With a store shared by replicas (a store.RateLimiterProvider: Redis) the
// budget lives in the store and holds across replicas; otherwise it is a
// bucket per key in this process. A shared limiter that fails (its store
// unreachable) lets the request through — fail open — with a warning and
// tokengate_refresher_rate_limit_errors_total: an outage of the limiter must
// never block refreshes or sign users out, and the store calls that follow
// answer 503 on their own if the store itself is down.
type limit struct {
	scope   string // "ip" or "session": the metric label and log field
	l       store.RateLimiter
	timeout time.Duration
	errors  prometheus.Counter
	log     *slog.Logger
	// failing is set while the limiter fails, so an outage logs once when
	// it starts and once when it ends, not once per request.
	failing atomic.Bool
}

// newLimit returns nil (no limit) when perSecond is zero.
func newLimit(scope string, perSecond float64, burst int, st store.Store, now func() time.Time,
	timeout time.Duration, m *metrics, log *slog.Logger) *limit {
	if perSecond <= 0 {
		return nil
	}
	l := &limit{scope: scope, timeout: timeout, errors: m.rateLimitErrors.WithLabelValues(scope), log: log}
	if p, ok := st.(store.RateLimiterProvider); ok {
		l.l = p.RateLimiter(scope, perSecond, burst)
	} else {
		l.l = newKeyedLimiter(perSecond, burst, now)
	}
	return l
}

// maxLimitKey is the longest key used as it is; a longer one (a client IP
// header a proxy filled with junk) is replaced by its SHA-256, so neither
// the in-process buckets nor the store's keys grow with it.
const maxLimitKey = 64

func limitKey(key string) string {
	if len(key) <= maxLimitKey {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// wait returns zero when key may make a counted attempt, otherwise how long
// until it may (the Retry-After).
func (l *limit) wait(ctx context.Context, key string) time.Duration {
	if l == nil || key == "" {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	d, err := l.l.Wait(ctx, limitKey(key))
	l.observe(ctx, err)
	if err != nil {
		return 0 // fail open
	}
	return d
}

// shared says the budget lives in the store (a round trip per call), not
// in this process.
func (l *limit) shared() bool {
	_, local := l.l.(*keyedLimiter)
	return !local
}

// waitAsync starts wait and returns the function that returns its result:
// a shared budget's store call then overlaps the caller's own (the
// returned function must be called exactly once). An in-process budget is
// read at once, without a goroutine.
func (l *limit) waitAsync(ctx context.Context, key string) func() time.Duration {
	if l == nil || key == "" || !l.shared() {
		d := l.wait(ctx, key)
		return func() time.Duration { return d }
	}
	done := make(chan time.Duration, 1)
	go func() { done <- l.wait(ctx, key) }()
	return func() time.Duration { return <-done }
}

// countBoth spends one attempt of a's budget for aKey and of b's for bKey,
// the two store calls at once when both budgets are shared.
func countBoth(ctx context.Context, a *limit, aKey string, b *limit, bKey string) {
	if a == nil || aKey == "" || b == nil || bKey == "" || !a.shared() || !b.shared() {
		a.count(ctx, aKey)
		b.count(ctx, bKey)
		return
	}
	done := make(chan struct{})
	go func() { defer close(done); a.count(ctx, aKey) }()
	b.count(ctx, bKey)
	<-done
}

// count spends one attempt of key's budget.
func (l *limit) count(ctx context.Context, key string) {
	if l == nil || key == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	l.observe(ctx, l.l.Spend(ctx, limitKey(key)))
}

func (l *limit) observe(ctx context.Context, err error) {
	if err != nil {
		l.errors.Inc()
		if !l.failing.Swap(true) {
			l.log.WarnContext(ctx, "rate limit unavailable; requests are not limited until it answers",
				"scope", l.scope, "error", err)
		}
		return
	}
	if l.failing.Swap(false) {
		l.log.InfoContext(ctx, "rate limit available again", "scope", l.scope)
	}
}
