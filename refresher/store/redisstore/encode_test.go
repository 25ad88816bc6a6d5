package redisstore

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestEncodeTime: the scripts compare encoded times as strings, so the
// encoding must order like the instants (before and after 1970 too) and
// round-trip to the nanosecond.
func TestEncodeTime(t *testing.T) {
	t.Parallel()
	if got := encodeTime(time.Time{}); got != "" {
		t.Errorf("zero time = %q, want empty", got)
	}
	if got, err := decodeTime(""); err != nil || !got.IsZero() {
		t.Errorf("decode empty = %v, %v", got, err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for range 10000 {
		a := base.Add(time.Duration(rng.Int64N(int64(200*365*24*time.Hour))) - 100*365*24*time.Hour)
		b := a.Add(time.Duration(rng.Int64N(int64(48*time.Hour))) - 24*time.Hour)
		ea, eb := encodeTime(a), encodeTime(b)
		if len(ea) != 16 || (ea < eb) != a.Before(b) || (ea == eb) != a.Equal(b) {
			t.Fatalf("%v → %s, %v → %s: string order differs from time order", a, ea, b, eb)
		}
		if got, err := decodeTime(ea); err != nil || !got.Equal(a) {
			t.Fatalf("round trip of %v = %v, %v", a, got, err)
		}
	}
	for _, bad := range []string{"xyz", "0123", "2026-03-01T12:00:00.000000000Z"} {
		if _, err := decodeTime(bad); err == nil {
			t.Errorf("decodeTime(%q) accepted", bad)
		}
	}
}

// TestEncodeTimeFormat: the encoding is the one stored since the first
// release (16 lower-case hex digits of the Unix nanoseconds, sign bit
// flipped), so records written by earlier versions compare the same.
func TestEncodeTimeFormat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		at := time.Unix(0, int64(rng.Uint64()))
		if got, want := encodeTime(at), fmt.Sprintf("%016x", uint64(at.UnixNano())^signBit); got != want {
			t.Fatalf("encodeTime(%v) = %s, want %s", at, got, want)
		}
	}
}
