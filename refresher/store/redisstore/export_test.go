package redisstore

import "time"

// SplitKeys makes s write the keys outside a session's slot with separate
// commands, as it does on Redis Cluster, so that path runs against a
// standalone test server too.
func SplitKeys(s *Store) { s.split = true }

// SetClockOffset replaces the estimate of Redis's clock minus ours, as a
// wrong reading would.
func SetClockOffset(s *Store, d time.Duration) {
	s.clock.mu.Lock()
	defer s.clock.mu.Unlock()
	s.clock.known, s.clock.offset, s.clock.lo, s.clock.hi = true, d, d, d
}
