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
