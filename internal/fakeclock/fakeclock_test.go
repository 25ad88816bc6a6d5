package fakeclock

import (
	"testing"
	"time"
)

func TestAdvance(t *testing.T) {
	t.Parallel()
	c := New()
	if !c.Now().Equal(Start) {
		t.Fatalf("starts at %v, want %v", c.Now(), Start)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(Start); got != 90*time.Second {
		t.Fatalf("advanced by %v, want 90s", got)
	}
}
