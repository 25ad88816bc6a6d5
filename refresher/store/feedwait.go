package store

import (
	"context"
	"strconv"
	"time"
)

// FeedRead reads an in-process revocation feed: the entries after sequence
// number after that are still live, the newest sequence number seen, and a
// channel that is closed by the next append. The channel must be taken before
// (or atomically with) the read, so an append between the two is not missed.
type FeedRead func(after uint64) (entries []Revocation, last uint64, changed <-chan struct{}, err error)

// WaitFeed is Revocations for backends whose appends are signalled in
// process (memory, bolt): cursors are decimal sequence numbers (anything else
// means "everything retained"), and the call returns as soon as there are
// entries, at once when wait ≤ 0, and otherwise when wait passes or ctx ends
// (with no entries and the cursor to resume from).
func WaitFeed(ctx context.Context, cursor string, wait time.Duration, read FeedRead) ([]Revocation, string, error) {
	after, err := strconv.ParseUint(cursor, 10, 64)
	if err != nil {
		after = 0 // foreign or empty cursor: everything retained
	}
	var timer <-chan time.Time
	for {
		out, last, changed, err := read(after)
		if err != nil {
			return nil, cursor, err
		}
		next := strconv.FormatUint(last, 10)
		if len(out) > 0 || wait <= 0 {
			return out, next, nil
		}
		if timer == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-changed:
			after = last
		case <-timer:
			return nil, next, nil
		case <-ctx.Done():
			return nil, next, nil
		}
	}
}
