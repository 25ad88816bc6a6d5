package dpop

import (
	"runtime"
	"strconv"
	"testing"
)

// TestThumbprintRFC7638 is the example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	t.Parallel()
	jwk := `{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`
	k, err := parseJWK([]byte(jwk), algorithms["RS256"])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint = %s, want %s", got, want)
	}
}

const sec = int64(1e9)

func TestReplayCacheBound(t *testing.T) {
	t.Parallel()
	const maxBytes = 64 << 10
	c := NewReplayCache(maxBytes)
	window := 65 * sec
	now := int64(1_700_000_000) * sec
	for i := range 100_000 {
		// iat advances by 1 ms per proof, all inside the window.
		iat := now + int64(i)*1e6
		if r := c.record("jkt", "jti-"+itoa(i), iat, iat+window, iat); r != replayRecorded {
			t.Fatalf("insert %d: %v, want recorded (each newer than every held)", i, r)
		}
		if _, b, _ := c.Stats(); b > maxBytes {
			t.Fatalf("after %d inserts: %d bytes > %d", i+1, b, maxBytes)
		}
	}
	n, b, ev := c.Stats()
	if n != maxBytes/replayEntryBytes || b > maxBytes || ev != uint64(100_000-n) {
		t.Fatalf("Stats = %d entries, %d bytes, %d evicted", n, b, ev)
	}
}

func TestReplayCacheFloor(t *testing.T) {
	t.Parallel()
	c := NewReplayCache(3 * replayEntryBytes)
	exp := func(iat int64) int64 { return iat + 100*sec }
	for i, jti := range []string{"a", "b", "c"} {
		iat := int64(10+i) * sec
		if r := c.record("k", jti, iat, exp(iat), 10*sec); r != replayRecorded {
			t.Fatalf("%s: %v", jti, r)
		}
	}
	// Full: "a" (iat 10, the oldest) is evicted for "d".
	if r := c.record("k", "d", 20*sec, exp(20*sec), 20*sec); r != replayRecorded {
		t.Fatalf("d: %v", r)
	}
	if _, _, ev := c.Stats(); ev != 1 {
		t.Fatalf("evicted = %d, want 1", ev)
	}
	// "a" replayed after its eviction: refused by the floor, not accepted.
	if r := c.record("k", "a", 10*sec, exp(10*sec), 20*sec); r != replayBelowFloor {
		t.Fatalf("evicted replay: %v, want below floor", r)
	}
	// Any proof not newer than the floor is refused, even a new one.
	if r := c.record("k", "new-old", 10*sec, exp(10*sec), 20*sec); r != replayBelowFloor {
		t.Fatalf("iat at the floor: %v, want below floor", r)
	}
	// Held entries are still replays.
	if r := c.record("k", "c", 12*sec, exp(12*sec), 20*sec); r != replaySeen {
		t.Fatalf("held replay: %v, want seen", r)
	}
	// Full, and not newer than the oldest held ("b", iat 11): refused
	// without evicting a newer entry.
	if r := c.record("k", "e", 11*sec, exp(11*sec), 20*sec); r != replayBelowFloor {
		t.Fatalf("oldest when full: %v, want below floor", r)
	}
	if n, _, ev := c.Stats(); n != 3 || ev != 1 {
		t.Fatalf("Stats = %d entries, %d evicted; want 3, 1", n, ev)
	}
}

// TestReplayCacheFloorAfterExpiry: room made by expiry (entries of a
// verifier with a shorter window sharing the cache) does not let an
// evicted proof back in: the floor refuses it.
func TestReplayCacheFloorAfterExpiry(t *testing.T) {
	t.Parallel()
	c := NewReplayCache(3 * replayEntryBytes)
	c.record("long", "a", 10*sec, 110*sec, 10*sec)
	c.record("short", "b", 11*sec, 15*sec, 11*sec)
	c.record("short", "c", 12*sec, 15*sec, 12*sec)
	if r := c.record("long", "d", 13*sec, 113*sec, 13*sec); r != replayRecorded {
		t.Fatalf("d: %v", r) // evicts "a"
	}
	// At 16 s "b" and "c" have expired and are dropped: the cache has room,
	// and "a" (still inside its window) comes back.
	if r := c.record("long", "a", 10*sec, 110*sec, 16*sec); r != replayBelowFloor {
		t.Fatalf("evicted replay with room in the cache: %v, want below floor", r)
	}
	if n, _, ev := c.Stats(); n != 1 || ev != 1 {
		t.Fatalf("Stats = %d entries, %d evicted; want 1, 1", n, ev)
	}
}

func TestReplayCacheExpiry(t *testing.T) {
	t.Parallel()
	c := NewReplayCache(2 * replayEntryBytes)
	if r := c.record("k", "a", 0, 65*sec, 0); r != replayRecorded {
		t.Fatal(r)
	}
	if r := c.record("k", "b", 1*sec, 66*sec, 1*sec); r != replayRecorded {
		t.Fatal(r)
	}
	// At 65 s "a" has expired: dropped lazily, without an eviction or a
	// floor, so "c" fits.
	if r := c.record("k", "c", 64*sec, 129*sec, 65*sec); r != replayRecorded {
		t.Fatal(r)
	}
	if n, _, ev := c.Stats(); n != 2 || ev != 0 {
		t.Fatalf("Stats = %d entries, %d evicted; want 2, 0", n, ev)
	}
	// "b" is still held.
	if r := c.record("k", "b", 1*sec, 66*sec, 65*sec); r != replaySeen {
		t.Fatalf("b: %v, want seen", r)
	}
	// An old iat is fine when nothing was evicted (the verifier's window
	// judges it, not the cache).
	if r := c.record("k", "d", 2*sec, 67*sec, 66*sec); r != replayRecorded {
		t.Fatalf("d: %v", r)
	}
}

func TestReplayCacheZeroValue(t *testing.T) {
	t.Parallel()
	var c ReplayCache
	if r := c.record("k", "a", 1, 2, 0); r != replayRecorded {
		t.Fatal(r)
	}
	if r := c.record("k", "a", 1, 2, 0); r != replaySeen {
		t.Fatal(r)
	}
}

// TestReplayCacheMemory holds replayEntryBytes to the Go heap: a full
// cache must not use more than its bound.
func TestReplayCacheMemory(t *testing.T) {
	const maxBytes = 4 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := NewReplayCache(maxBytes)
	for i := range 100_000 {
		iat := int64(i) * 1e6
		c.record("jkt", "jti-"+itoa(i), iat, iat+65*sec, iat)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n, b, _ := c.Stats()
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries, estimated %d bytes, heap grew %d bytes (%.1f per entry)", n, b, used, float64(used)/float64(n))
	if used > maxBytes {
		t.Fatalf("heap grew %d bytes for a cache bounded at %d", used, maxBytes)
	}
	runtime.KeepAlive(c)
}

func itoa(i int) string { return strconv.Itoa(i) }
