package redisstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/refresher/store"
)

// The revocation feed is a Redis stream; its entry IDs are the cursors.
//
// Long polls do not each hold a Redis connection in a blocking XREAD (a few
// dozen extauthz replicas would exhaust the pool and starve refreshes).
// Instead one goroutine per Store blocks on the stream and wakes every
// waiting Revocations call when entries arrive; each then reads after its
// own cursor with a plain XRANGE.

// watchBlock bounds one blocking XREAD of the watcher.
const watchBlock = 5 * time.Second

// streamID matches a Redis stream ID, the feed's cursor.
var streamID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// feedWatch is the shared blocking reader of the feed.
type feedWatch struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when entries arrive
	stop    context.CancelFunc
	done    chan struct{}
	closed  bool
}

// changed returns a channel closed when entries are appended after the
// call; it starts the watcher on first use. The watcher's starting position
// is read before this returns, so an entry appended after it is always
// signalled and one appended before is visible to a read that follows.
func (s *Store) feedChanged(ctx context.Context) (<-chan struct{}, error) {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errors.New("redisstore: store closed")
	}
	if w.done == nil {
		octx, cancel := s.op(ctx)
		last, err := s.rdb.XRevRangeN(octx, s.feedKey(), "+", "-", 1).Result()
		cancel()
		if err != nil {
			return nil, err
		}
		from := "0-0"
		if len(last) == 1 {
			from = last[0].ID
		}
		wctx, stop := context.WithCancel(context.Background())
		w.stop, w.done, w.changed = stop, make(chan struct{}), make(chan struct{})
		go s.watchFeed(wctx, from)
	}
	return w.changed, nil
}

// watchFeed blocks on the stream after from and broadcasts each arrival.
func (s *Store) watchFeed(ctx context.Context, from string) {
	w := &s.watch
	defer close(w.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, watchBlock+s.timeout)
		streams, err := s.rdb.XRead(rctx, &redis.XReadArgs{
			Streams: []string{s.feedKey(), from}, Count: feedPage, Block: watchBlock,
		}).Result()
		cancel()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			// Redis is down: waiters find out by their own reads; retry.
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if len(streams) != 1 || len(streams[0].Messages) == 0 {
			continue
		}
		msgs := streams[0].Messages
		from = msgs[len(msgs)-1].ID
		w.mu.Lock()
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// close stops the watcher; the returned func waits until it has ended.
func (w *feedWatch) close() (wait func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.stop == nil {
		return func() {}
	}
	w.stop()
	done := w.done
	return func() { <-done }
}

func (s *Store) Revocations(ctx context.Context, cursor string, now time.Time, wait time.Duration) ([]store.Revocation, string, error) {
	if !streamID.MatchString(cursor) {
		cursor = "" // another backend's cursor, or none: everything retained
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Subscribe before reading, so nothing appended in between is missed.
		var changed <-chan struct{}
		if wait > 0 {
			var err error
			if changed, err = s.feedChanged(ctx); err != nil {
				return nil, cursor, fmt.Errorf("redisstore: watch revocation feed: %w", err)
			}
		}
		msgs, err := s.readFeed(ctx, cursor)
		if err != nil {
			return nil, cursor, err
		}
		if len(msgs) > 0 || wait <= 0 {
			return s.entries(msgs, cursor, now)
		}
		select {
		case <-changed:
		case <-timeout:
			return nil, cursor, nil
		case <-ctx.Done():
			return nil, cursor, nil
		}
	}
}

// readFeed returns up to feedPage entries after cursor ("" = from the start).
func (s *Store) readFeed(ctx context.Context, cursor string) ([]redis.XMessage, error) {
	start := "-"
	if cursor != "" {
		start = "(" + cursor
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	msgs, err := s.rdb.XRangeN(ctx, s.feedKey(), start, "+", feedPage).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: read revocation feed: %w", err)
	}
	return msgs, nil
}

// entries turns stream messages into feed entries whose until is after now,
// and returns the cursor after the last message.
func (s *Store) entries(msgs []redis.XMessage, cursor string, now time.Time) ([]store.Revocation, string, error) {
	var out []store.Revocation
	for _, m := range msgs {
		cursor = m.ID
		sid, _ := m.Values["sid"].(string)
		sub, _ := m.Values["sub"].(string)
		u, _ := m.Values["until"].(string)
		until, err := decodeTime(u)
		if err != nil {
			return nil, cursor, fmt.Errorf("redisstore: feed entry %s: until %q: %w", m.ID, u, err)
		}
		if until.After(now) {
			out = append(out, store.Revocation{SessionID: sid, Subject: sub, Until: until})
		}
	}
	return out, cursor, nil
}
