package boltstore

import (
	"fmt"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Group commit: concurrent rotations share one read-write transaction and
// so one fsync, which is what a bolt write costs. A rotation that arrives
// while no commit is running commits at once, alone (no added latency when
// idle); rotations that arrive while one is committing queue up, and the
// next commit takes the whole queue. Each member runs in the shared
// transaction in queue order, reading what the members before it wrote, so
// the outcome is the one of running them one after the other; the answer
// goes back only once the commit is durable, and a failed commit fails every
// member (none of their writes are on disk).
//
// A member whose function returns an error (a decision such as ErrExists,
// or a record that does not decode) would abort the shared transaction: the
// transaction is rolled back, that member runs again alone in its own
// transaction (its answer is its own), and the others run again together.
// A member's function may therefore run more than once; it must set its
// outputs afresh on every run, and the caller reads them only after a nil
// error (the run that committed).
type group struct {
	mu      sync.Mutex
	queue   []*groupCall
	leading bool         // a goroutine is committing; it hands over before leaving
	commits atomic.Int64 // shared transactions committed (for tests)
}

type groupCall struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan bool // true: commit the queue yourself; false: err is set
}

// batch runs fn in a read-write transaction shared with other concurrent
// callers, and returns once that transaction committed (nil) or failed.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	if s.solo {
		return s.update(fn)
	}
	g := &s.group
	c := &groupCall{fn: fn, done: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead && !<-c.done {
		return c.err
	}

	// This goroutine commits the queue, which holds c.
	g.mu.Lock()
	calls := g.queue
	g.queue = nil
	g.mu.Unlock()
	s.commitGroup(calls)
	for _, o := range calls {
		if o != c {
			o.done <- false
		}
	}
	// Hand over to the first caller that queued meanwhile, or stop leading.
	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- true
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return c.err
}

// commitGroup runs calls in shared transactions until each has its answer.
func (s *Store) commitGroup(calls []*groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := s.update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safeCall(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 { // committed, or the commit failed for all (s.update recorded it)
			if err == nil {
				s.group.commits.Add(1)
			}
			for _, c := range calls {
				c.err = err
			}
			return
		}
		// The failing member answers alone; the others run again without it.
		c := calls[failed]
		c.err = s.update(func(tx *bolt.Tx) error { return safeCall(c.fn, tx) })
		rest := make([]*groupCall, 0, len(calls)-1)
		rest = append(rest, calls[:failed]...)
		calls = append(rest, calls[failed+1:]...)
	}
}

// safeCall turns a panic in fn into its error, so that one member cannot
// leave the others waiting forever.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in bolt transaction: %v", p)
		}
	}()
	return fn(tx)
}
