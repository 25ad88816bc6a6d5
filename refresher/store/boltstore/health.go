package boltstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Readiness must say whether the store can commit, not only whether it can
// be read: on a full disk every rotation fails while reads still work.
//
// A write probe alone cannot tell: bbolt writes a small transaction into
// pages freed by earlier ones, so a probe commits on a full disk while a
// rotation that needs the file to grow fails. So readiness follows the
// writes clients actually make. Every write transaction records whether it
// committed; after a failed commit Ping reports not ready until, at least
// probeAfter later, a probe write commits and the file system has room for
// the file's next growth step. A replica without traffic stays ready (its
// next write decides); a replica whose writes fail is taken out of the load
// balancer within one readiness period and put back once writes work again.
const probeAfter = 2 * time.Second

var keyProbe = []byte("probe")

// allocSize is bbolt's growth step above 16 MiB (DB.AllocSize's default).
const allocSize = 16 << 20

// rlimInfinity is RLIM_INFINITY as the uint64 Getrlimit returns.
const rlimInfinity = ^uint64(0)

// writeHealth is the outcome of the last write transaction.
type writeHealth struct {
	mu       sync.Mutex
	failedAt time.Time // zero while the last write committed
	err      error
	now      func() time.Time
}

func (h *writeHealth) record(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.failedAt, h.err = time.Time{}, nil
		return
	}
	h.failedAt, h.err = h.clock(), err
}

func (h *writeHealth) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// state returns the last write failure (nil if the last write committed) and
// whether it is old enough to try a probe.
func (h *writeHealth) state() (error, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		return nil, false
	}
	return h.err, h.clock().Sub(h.failedAt) >= probeAfter
}

// update runs fn in a read-write transaction, like bolt.DB.Update, and
// records whether the commit succeeded. An error returned by fn is a
// decision or a decoding problem, not a failed write, and is not recorded.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	tx, err := s.db.Begin(true)
	if err != nil {
		s.health.record(err)
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	err = tx.Commit()
	s.health.record(err)
	return err
}

// Ping implements store.Store (readiness): nil while the file is open and
// the last write committed; after a failed write, an error until a probe
// write commits and there is room to grow (see probeAfter).
func (s *Store) Ping(context.Context) error {
	failed, probe := s.health.state()
	if failed == nil {
		return s.db.View(func(*bolt.Tx) error { return nil })
	}
	if !probe {
		return fmt.Errorf("bolt store cannot commit: last write failed: %w", failed)
	}
	if err := s.growRoom(); err != nil {
		return fmt.Errorf("bolt store cannot commit: %w (last write failed: %w)", err, failed)
	}
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyProbe, timeKey(time.Now()))
	})
	if err != nil {
		return fmt.Errorf("bolt store cannot commit: probe write failed: %w", err)
	}
	return nil
}

// growRoom checks that the file can grow by its next step (bbolt doubles a
// file below 16 MiB and then grows it by 16 MiB): free space on its file
// system and the process's file-size limit (RLIMIT_FSIZE).
func (s *Store) growRoom() error {
	st, err := os.Stat(s.db.Path())
	if err != nil {
		return err
	}
	size := st.Size()
	step := min(size, allocSize)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.db.Path(), &fs); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < step {
		return fmt.Errorf("%d bytes free on the file system, the file's next growth needs %d", free, step)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err == nil && lim.Cur != rlimInfinity && uint64(size+step) > lim.Cur {
		return fmt.Errorf("file size limit (RLIMIT_FSIZE) %d bytes, the file's next growth needs %d", lim.Cur, size+step)
	}
	return nil
}
