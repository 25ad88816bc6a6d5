package boltstore

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// BucketLens counts the keys of every bucket.
func (s *Store) BucketLens() map[string]int {
	out := map[string]int{}
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			out[string(b)] = tx.Bucket(b).Stats().KeyN
		}
		return nil
	})
	return out
}

// FailWrite records a failed commit at the given clock, as a full disk would.
func (s *Store) FailWrite(err error, now func() time.Time) {
	s.health.now = now
	s.health.record(err)
}

// NoSync skips fsync on commit: for tests that make thousands of writes and
// do not survive a crash anyway.
func (s *Store) NoSync() { s.db.NoSync = true }

// InUseBytes is the bytes of pages the buckets use (not free pages): what
// the file would need if bbolt packed it.
func (s *Store) InUseBytes() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			st := tx.Bucket(b).Stats()
			n += st.BranchInuse + st.LeafInuse
		}
		return nil
	})
	return n
}

// SoloCommits turns group commits off: one transaction per rotation, as
// before rotations shared transactions (the benchmark's baseline).
func (s *Store) SoloCommits() { s.solo = true }

// HoldWrites begins a read-write transaction, so that every writer waits
// until release rolls it back.
func (s *Store) HoldWrites() (release func()) {
	tx, err := s.db.Begin(true)
	if err != nil {
		panic(err)
	}
	return func() { _ = tx.Rollback() }
}

// GroupState reports whether a goroutine is committing a group, how many
// rotations wait for the next one, and how many group transactions
// committed.
func (s *Store) GroupState() (leading bool, queued int, commits int64) {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.leading, len(s.group.queue), s.group.commits.Load()
}
