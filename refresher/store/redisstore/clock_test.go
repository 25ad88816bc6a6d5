package redisstore

import (
	"testing"
	"time"
)

// TestRedisClockOffset: the offset follows the narrowest consistent
// reading, and a reading that contradicts it (a clock stepped by NTP,
// another Cluster node) replaces it at once, so a Redis clock ahead of
// the refresher's never makes every rotation late.
func TestRedisClockOffset(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	var c redisClock
	if _, ok := c.get(); ok {
		t.Fatal("an offset before any reading")
	}
	steps := []struct {
		name                string
		sent, received, srv time.Time
		want                time.Duration
	}{
		// Redis 10 s ahead, read in a 100 ms round trip: offset 10 s ± 50 ms.
		{"first reading", at(0), at(100), at(10_050), 10 * time.Second},
		// A wider reading consistent with it changes nothing.
		{"wider, consistent", at(1000), at(1400), at(11_300), 10 * time.Second},
		// A narrower one refines it.
		{"narrower", at(2000), at(2002), at(12_011), 10*time.Second + 10*time.Millisecond},
		// Redis's clock stepped back 12 s: the reading contradicts the
		// estimate, so it wins although it is wider.
		{"clock stepped", at(3000), at(3300), at(1150), -2 * time.Second},
		// A reading with the received time before the sent one is ignored.
		{"bogus", at(5000), at(4000), at(0), -2 * time.Second},
	}
	for _, s := range steps {
		c.observe(s.sent, s.received, s.srv)
		if got, ok := c.get(); !ok || got != s.want {
			t.Errorf("%s: offset %v, %v; want %v", s.name, got, ok, s.want)
		}
	}
}
