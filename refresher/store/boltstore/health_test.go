package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"
)

// Readiness follows the writes: after a failed commit Ping reports not
// ready, and only a probe write (no earlier than two seconds later) makes
// it ready again. The real full disk is in test/fault (TestDiskFull).
func TestPingAfterFailedWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "tokengate.db"))
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping of a fresh store = %v", err)
	}
	clock := fakeclock.New()
	s.FailWrite(syscall.ENOSPC, clock.Now)
	err := s.Ping(ctx)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Ping after a failed write = %v, want the write's error", err)
	}
	clock.Advance(time.Second)
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping one second after a failed write = nil, want not ready")
	}
	clock.Advance(time.Second)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after a committed probe = %v, want ready", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("second Ping = %v", err)
	}
}
