// Package fakeclock is the clock of tests where time matters: it moves only
// when told, so expiry, grace windows and leeway are tested without sleeps.
package fakeclock

import (
	"sync"
	"time"
)

// Start is where every Clock begins: a fixed instant, so failures reproduce.
var Start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Clock is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock at Start.
func New() *Clock { return &Clock{t: Start} }

// Now returns the clock's time; pass it where code takes a func() time.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
