package extauthz

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// entry is a verified token with everything an allow needs, computed once:
// identity headers, roles and scopes, and the allow answer itself, so a
// cache hit renders nothing but what changes with the clock.
type entry struct {
	v   verified // by value: one object fewer per entry
	set []header
	// setProto is set as Envoy headers, built once: protos are read-only
	// once built, so concurrent responses may share them.
	setProto []*corev3.HeaderValueOption
	unset    []string
	// unsetAuth is unset plus "authorization", for remove_authorization_header.
	unsetAuth []string
	roles     []string
	scopes    []string

	// httpSet is set with canonical names and []string values, assigned
	// straight into an http.Header (Header.Set would canonicalise and
	// allocate per header per request). httpRemove is the
	// x-envoy-auth-headers-to-remove value for unset and unsetAuth (nil
	// when empty). Values are shared by every answer: never mutate them.
	httpSet    []httpHeader
	httpRemove [2][]string
	// allows are the ready-made gRPC allow responses, one per variant
	// (allowVariant), each valid while x-token-expires-in has the value it
	// was built with: rebuilt at most once a second. A stored response is
	// never mutated, so concurrent Checks may return (and gRPC marshal) it.
	allows [4]atomic.Pointer[readyAllow]
	// expires is the x-token-expires-in value for HTTP, likewise.
	expires atomic.Pointer[readyExpires]
	// ready says the ready-made parts above exist: only for entries that
	// go into the cache (with cache.disabled each check would build them
	// for one use).
	ready bool
}

type httpHeader struct {
	name   string // canonical
	values []string
}

type readyAllow struct {
	left int64
	resp *authv3.CheckResponse
}

type readyExpires struct {
	left   int64
	values []string // a window of value, len == cap
	value  [1]string
}

// newEntry builds an entry from a verified token, its identity headers
// (set) and the mapped names nothing sets (unset); ready builds the
// ready-made HTTP and gRPC answers too, for an entry to be cached. canon
// gives the headers' canonical HTTP names (shared, not allocated per
// entry). The entry keeps few objects: a full cache is the bulk of the
// live heap, which every garbage collection marks.
func newEntry(v *verified, set []header, unset []string, ready bool, canon func(string) string) *entry {
	// unset and unsetAuth share one array (unset is its prefix, with
	// len == cap, so an append to it copies).
	unsetAuth := append(append(make([]string, 0, len(unset)+1), unset...), "authorization")
	e := &entry{
		v: *v, set: set, unset: unsetAuth[:len(unset):len(unset)],
		setProto:  headerOptions(set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		unsetAuth: unsetAuth,
		ready:     ready,
	}
	if !ready {
		return e
	}
	// One array holds every header's value and the two remove lists: each
	// []string is a one-element window of it with len == cap
	// (writeReadyAllow).
	values := make([]string, len(set)+2)
	if len(set) > 0 {
		e.httpSet = make([]httpHeader, len(set))
		for i, h := range set {
			values[i] = h.value
			e.httpSet[i] = httpHeader{canon(h.name), values[i : i+1 : i+1]}
		}
	}
	// The remove list without "authorization" is a prefix of the one with.
	withAuth := strings.Join(e.unsetAuth, ",")
	values[len(set)+1] = withAuth
	e.httpRemove[1] = values[len(set)+1:]
	if len(e.unset) > 0 {
		values[len(set)] = withAuth[:len(withAuth)-len(",authorization")]
		e.httpRemove[0] = values[len(set) : len(set)+1 : len(set)+1]
	}
	return e
}

// packStrings copies the strings ss point to into one new allocation and
// points them at their copies: a cached entry's strings are then one
// object without pointers instead of slices of the token's decoded payload
// and separate allocations.
func packStrings(ss []*string) {
	n := 0
	for _, p := range ss {
		n += len(*p)
	}
	if n == 0 {
		return
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range ss {
		b.WriteString(*p)
	}
	all := b.String()
	off := 0
	for _, p := range ss {
		l := len(*p)
		*p = all[off : off+l]
		off += l
	}
}

// tokenCache is an LRU of verified tokens bounded in entries and in bytes
// (an estimate of what each entry holds: entrySize). An entry is valid
// until the token's exp and only while the key that verified it is still
// in its provider's set; both are checked on read, so no goroutine is
// needed. Keys are canonical token spellings (splitToken), in one map per
// app class (policy.go): an entry holds what its token means to the apps of
// one class (audiences checked, identity headers), so a token verified for
// one class is never found by another. The bounds cover all classes.
type tokenCache struct {
	mu         sync.Mutex
	items      []map[string]*cacheNode // by class
	entries    int
	head, tail *cacheNode // head is the most recently used
	bytesUsed  int64
	maxEntries int
	maxBytes   int64
	m          *metrics
}

type cacheNode struct {
	key        string
	class      int
	e          *entry
	size       int64
	prev, next *cacheNode
	// alias links a token's node and the node of its high-S spelling
	// (getTwin), both ways; isAlias marks the latter. An alias is an index,
	// not an entry: it counts its own key's bytes, not in entries, and
	// goes when its token's node goes.
	alias   *cacheNode
	isAlias bool
}

// aliasOverhead is what an alias node holds besides its key: the node and
// its map slot.
const aliasOverhead = 160

func newTokenCache(maxEntries int, maxBytes int64, classes int, m *metrics) (*tokenCache, error) {
	if maxEntries <= 0 || maxBytes <= 0 || classes <= 0 {
		return nil, errors.New("the cache needs a positive size and max_bytes")
	}
	c := &tokenCache{items: make([]map[string]*cacheNode, classes), maxEntries: maxEntries, maxBytes: maxBytes, m: m}
	for i := range c.items {
		c.items[i] = map[string]*cacheNode{}
	}
	return c, nil
}

// get returns the valid entry for key, or nil (dropping an entry that is
// no longer valid). It counts nothing: the caller counts one hit or miss
// per check (a check may look up two spellings).
func (c *tokenCache) get(class int, key string, now time.Time) *entry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.use(c.items[class][key], now)
}

// keyBufs hold twin keys (getTwin) so that building one allocates nothing.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// getTwin finds the entry of token's low-S twin when token ends in a
// high-S ECDSA signature (twinKey): the same token, cached under its
// canonical spelling. The entry counts only if that token was verified
// with the curve the twin was computed for (the curve is guessed from the
// signature's length, which an EdDSA signature shares with ES256). A hit
// indexes the entry under token as well (an alias node), so the spelling's
// next checks are found by get; half of all ECDSA signatures have a high S.
func (c *tokenCache) getTwin(class int, token string, now time.Time) *entry {
	if c == nil {
		return nil
	}
	bp := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(bp)
	if cap(*bp) < len(token) {
		*bp = make([]byte, 0, len(token))
	}
	key, curve := twinKey(*bp, token)
	if key == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.items[class][string(key)] // no allocation: the compiler looks up the bytes
	if n == nil || n.isAlias || n.e.v.alg != curve.alg {
		return nil
	}
	e := c.use(n, now)
	if e != nil && n.alias == nil {
		// Index the entry under this spelling too, so that its next
		// checks find it with one lookup instead of computing the twin.
		c.addAlias(n, token)
	}
	return e
}

// addAlias indexes n's entry under key, the high-S spelling of n's token.
// c.mu is held.
func (c *tokenCache) addAlias(n *cacheNode, key string) {
	size := int64(aliasOverhead + len(key))
	if size > c.maxBytes {
		return
	}
	key = strings.Clone(key)
	if old := c.items[n.class][key]; old != nil {
		c.unlink(old)
	}
	a := &cacheNode{key: key, class: n.class, e: n.e, size: size, alias: n, isAlias: true}
	n.alias = a
	c.items[n.class][key] = a
	c.bytesUsed += size
	c.toFront(a)
	for c.tail != nil && (c.bytesUsed > c.maxBytes || c.entries > c.maxEntries) {
		c.unlink(c.tail)
	}
	c.gauges()
}

// use returns n's entry if it is still valid (dropping it if not) and
// marks it most recently used. c.mu is held.
func (c *tokenCache) use(n *cacheNode, now time.Time) *entry {
	if n == nil {
		return nil
	}
	if !now.Before(n.e.v.exp) || !n.e.v.provider.hasKey(n.e.v.keyID) {
		if n.isAlias {
			n = n.alias // the token's node, which takes its alias with it
		}
		c.unlink(n)
		c.gauges()
		return nil
	}
	if n.isAlias {
		c.toFront(n.alias) // a hit by either spelling keeps the token
	}
	c.toFront(n)
	return n.e
}

// count records one check's cache outcome.
func (c *tokenCache) count(hit bool) {
	switch {
	case c == nil:
	case hit:
		c.m.cacheHits.Inc()
	default:
		c.m.cacheMisses.Inc()
	}
}

// add caches e under key (copied: the caller's string may be a slice of a
// much larger header). An entry larger than the whole cache is not kept.
func (c *tokenCache) add(class int, key string, e *entry) {
	if c == nil {
		return
	}
	size := entrySize(key, e)
	if size > c.maxBytes {
		return
	}
	key = strings.Clone(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.items[class][key]; old != nil {
		c.unlink(old)
	}
	n := &cacheNode{key: key, class: class, e: e, size: size}
	c.items[class][key] = n
	c.entries++
	c.bytesUsed += size
	c.toFront(n)
	for c.tail != nil && (c.bytesUsed > c.maxBytes || c.entries > c.maxEntries) {
		c.unlink(c.tail)
	}
	c.gauges()
}

func (c *tokenCache) toFront(n *cacheNode) {
	if c.head == n {
		return
	}
	if n.prev != nil {
		n.prev.next = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	}
	if c.tail == n {
		c.tail = n.prev
	}
	n.prev, n.next = nil, c.head
	if c.head != nil {
		c.head.prev = n
	}
	c.head = n
	if c.tail == nil {
		c.tail = n
	}
}

func (c *tokenCache) unlink(n *cacheNode) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		c.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nil, nil
	delete(c.items[n.class], n.key)
	c.bytesUsed -= n.size
	a := n.alias
	if a != nil {
		n.alias, a.alias = nil, nil
	}
	if n.isAlias {
		return
	}
	c.entries--
	if a != nil {
		c.unlink(a)
	}
}

func (c *tokenCache) gauges() {
	c.m.cacheBytes.Set(float64(c.bytesUsed))
	c.m.cacheEntries.Set(float64(c.entries))
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries
}

func (c *tokenCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytesUsed
}

// contains reports whether key is cached for the default app's class.
func (c *tokenCache) contains(key string) bool { return c.containsIn(0, key) }

func (c *tokenCache) containsIn(class int, key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.items[class][key] != nil
}

// Estimated sizes (64-bit), checked against the heap by
// TestCacheBytesEstimate: what an entry holds besides the strings counted
// one by one — the node, its map slot, the entry and verified structs and
// the ready-made answers (up to four gRPC responses and one HTTP value,
// built on later hits).
const (
	entryOverhead  = 4096
	headerOverhead = 320 // a header as a pair, a proto, an HTTP value, and its canonical name
	stringOverhead = 16
	sliceOverhead  = 24
)

// entrySize estimates the bytes a cached entry keeps alive: the key, the
// strings taken from the token (packStrings: the decoded claims and the
// payload are not kept), the prepared headers, roles and scopes.
func entrySize(key string, e *entry) int64 {
	n := entryOverhead + len(key)
	n += len(e.v.alg) + len(e.v.kid) + len(e.v.sub) + len(e.v.sid) + len(e.v.jti) + len(e.v.cnf.jkt) + len(e.v.cnf.dev)
	for _, h := range e.set {
		n += headerOverhead + 3*(len(h.name)+len(h.value))
	}
	for _, name := range e.unset {
		n += 3 * (stringOverhead + len(name))
	}
	n += 2 * stringOverhead // "authorization" in unsetAuth, the joined remove lists
	for _, list := range [][]string{e.roles, e.scopes} {
		n += sliceOverhead
		for _, s := range list {
			n += stringOverhead + len(s)
		}
	}
	return int64(n)
}
