package dpop

import (
	"crypto/sha256"
	"sync"
)

// ReplayCache remembers accepted proofs (by a hash of jkt and jti) until
// they are older than the verifier's window, bounded in bytes. When full it
// evicts the proof with the oldest `iat` and from then on refuses any proof
// whose `iat` is not newer than the evicted one: a replay is never
// accepted, at worst an old-but-valid proof is refused as stale.
//
// The verifier gives each entry its expiry (iat + MaxAge + MaxSkew);
// expired entries are dropped lazily, when a proof is recorded. One cache
// may serve several verifiers.
type ReplayCache struct {
	mu       sync.Mutex
	maxBytes int64
	seen     map[replayKey]struct{}
	byIAT    replayHeap
	// floor is the newest iat ever evicted before its expiry (Unix
	// nanoseconds); a proof with iat ≤ floor is refused.
	floor    int64
	hasFloor bool
	evicted  uint64
}

// replayKey is the first 16 bytes of SHA-256(jkt || 0 || jti): a fixed
// size whatever the jti's length. A collision (2^-64 at 2^32 entries) could
// only refuse a proof, never accept a replay.
type replayKey [16]byte

type replayEntry struct {
	key replayKey
	iat int64 // Unix nanoseconds
	exp int64 // Unix nanoseconds
}

// replayEntryBytes is the estimated memory of one entry: 32 bytes in the
// heap's slice and about 20 in the map (16-byte key, a control byte, a
// 7/8 load factor), each doubled because a slice and a map grow by
// doubling and may be half empty, rounded up. TestReplayCacheMemory checks
// the estimate against the Go heap.
const replayEntryBytes = 112

// DefaultReplayCacheBytes is NewReplayCache's bound for maxBytes ≤ 0.
const DefaultReplayCacheBytes = 4 << 20

// NewReplayCache returns a cache holding at most maxBytes of entries
// (default 4 MiB when ≤ 0).
func NewReplayCache(maxBytes int64) *ReplayCache {
	if maxBytes <= 0 {
		maxBytes = DefaultReplayCacheBytes
	}
	return &ReplayCache{maxBytes: maxBytes}
}

// Stats reports the entries held, their estimated bytes and how many were
// evicted before they expired (for metrics).
func (c *ReplayCache) Stats() (entries int, bytes int64, evicted uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byIAT), int64(len(c.byIAT)) * replayEntryBytes, c.evicted
}

func newReplayKey(jkt, jti string) replayKey {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var k replayKey
	copy(k[:], sum[:])
	return k
}

type replayResult uint8

const (
	replayRecorded replayResult = iota
	replaySeen
	replayBelowFloor
)

// record checks and records one proof atomically: replaySeen when the
// (jkt, jti) is held, replayBelowFloor when iat is not newer than an
// evicted proof's, else it is recorded until exp. now drops expired
// entries first. Times are Unix nanoseconds.
func (c *ReplayCache) record(jkt, jti string, iat, exp, now int64) replayResult {
	k := newReplayKey(jkt, jti)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[replayKey]struct{})
		if c.maxBytes <= 0 {
			c.maxBytes = DefaultReplayCacheBytes
		}
	}
	for len(c.byIAT) > 0 && c.byIAT[0].exp <= now {
		e := c.byIAT.pop()
		delete(c.seen, e.key)
	}
	if _, ok := c.seen[k]; ok {
		return replaySeen
	}
	if c.hasFloor && iat <= c.floor {
		return replayBelowFloor
	}
	maxEntries := int(c.maxBytes / replayEntryBytes)
	if maxEntries < 1 {
		maxEntries = 1
	}
	for len(c.byIAT) >= maxEntries {
		if iat <= c.byIAT[0].iat {
			// Full, and this proof is not newer than the oldest held:
			// refuse it rather than evict a newer one for it.
			return replayBelowFloor
		}
		e := c.byIAT.pop()
		delete(c.seen, e.key)
		c.evicted++
		if !c.hasFloor || e.iat > c.floor {
			c.floor, c.hasFloor = e.iat, true
		}
	}
	c.seen[k] = struct{}{}
	c.byIAT.push(replayEntry{key: k, iat: iat, exp: exp})
	return replayRecorded
}

// replayHeap is a min-heap by iat (written out rather than through
// container/heap, whose interface boxes every entry pushed or popped).
type replayHeap []replayEntry

func (h *replayHeap) push(e replayEntry) {
	*h = append(*h, e)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p].iat <= a[i].iat {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *replayHeap) pop() replayEntry {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && a[l].iat < a[m].iat {
			m = l
		}
		if r := l + 1; r < n && a[r].iat < a[m].iat {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}
