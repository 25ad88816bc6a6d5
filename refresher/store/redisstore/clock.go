package redisstore

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// A rotation must not take effect after its caller gave up on it. When
// Redis stalls (SIGSTOP, a long fork, a stuck disk under appendfsync
// always), the scripts already written to its sockets stay queued and run
// when it resumes; the refresher meanwhile answered 503. A rotation applied
// then records the parent as rotated at the request's time into a child the
// client never received, so the client's retry — after the stall, possibly
// later than the grace window — would be judged reuse and sign the user
// out. So the rotation script reads Redis's TIME and refuses to run past
// the caller's deadline (ErrLate).
//
// The deadline is the caller's context deadline, on the refresher's clock;
// the script compares it with Redis's clock. Clocks of two hosts differ,
// and a Redis clock ahead of ours by more than the store timeout would
// refuse every rotation, so the deadline is converted to Redis's clock with
// a measured offset: every rotation reply carries the TIME the script read,
// and the round trip brackets it (redisClock.observe). The estimate is off
// by at most half the round trip of the sample it comes from; decisions
// still use the issuer's clock only (the request's Now), never Redis's.

// redisClock estimates Redis's clock minus the refresher's.
type redisClock struct {
	mu     sync.Mutex
	known  bool
	offset time.Duration
	// lo, hi bound the true offset, from the sample behind offset.
	lo, hi time.Duration
}

// observe takes one reading: the server's time read between sent and
// received (local instants). The true offset lies in [server-received,
// server-sent]. The current estimate is kept while it lies inside that
// interval and came from a narrower one; otherwise (a better sample, or a
// clock that moved: NTP step, another Cluster node) the new reading
// replaces it.
func (c *redisClock) observe(sent, received, server time.Time) {
	lo, hi := server.Sub(received), server.Sub(sent)
	if hi < lo {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	inside := c.offset >= lo && c.offset <= hi
	if c.known && inside && c.hi-c.lo <= hi-lo {
		return
	}
	c.known, c.lo, c.hi, c.offset = true, lo, hi, lo+(hi-lo)/2
}

// get returns the offset, and whether there is one yet.
func (c *redisClock) get() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset, c.known
}

// sampleClock reads Redis's TIME once, for a first estimate.
func (s *Store) sampleClock(ctx context.Context) error {
	sent := time.Now()
	server, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	s.clock.observe(sent, time.Now(), server)
	return nil
}

// serverDeadline is ctx's deadline on Redis's clock, in microseconds since
// the epoch (what the scripts compare TIME with).
func (s *Store) serverDeadline(ctx context.Context) (string, error) {
	off, ok := s.clock.get()
	if !ok {
		if err := s.sampleClock(ctx); err != nil {
			return "", err
		}
		off, _ = s.clock.get()
	}
	d, ok := ctx.Deadline()
	if !ok {
		// s.op always sets one; without it nothing is late.
		return "", nil
	}
	return strconv.FormatInt(d.Add(off).UnixMicro(), 10), nil
}

// parseTime reads the seconds and microseconds of a TIME reply, as the
// scripts return them.
func parseTime(sec, usec any) (time.Time, bool) {
	ss, ok1 := sec.(string)
	us, ok2 := usec.(string)
	if !ok1 || !ok2 {
		return time.Time{}, false
	}
	a, err1 := strconv.ParseInt(ss, 10, 64)
	b, err2 := strconv.ParseInt(us, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, false
	}
	return time.Unix(a, b*1000), true
}
