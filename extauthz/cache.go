package extauthz

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	lru "github.com/hashicorp/golang-lru/v2"
)

// entry is a verified token with everything an allow needs, computed once:
// identity headers, roles and scopes, and the allow answer itself, so a
// cache hit renders nothing but what changes with the clock.
type entry struct {
	v   *verified
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
	values []string
}

// newEntry builds an entry from a verified token, its identity headers
// (set) and the mapped names nothing sets (unset); ready builds the
// ready-made HTTP and gRPC answers too, for an entry to be cached.
func newEntry(v *verified, set []header, unset []string, ready bool) *entry {
	e := &entry{
		v: v, set: set, unset: unset,
		setProto:  headerOptions(set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		unsetAuth: append(append(make([]string, 0, len(unset)+1), unset...), "authorization"),
		ready:     ready,
	}
	if !ready {
		return e
	}
	for _, h := range set {
		e.httpSet = append(e.httpSet, httpHeader{http.CanonicalHeaderKey(h.name), []string{h.value}})
	}
	for i, names := range [2][]string{e.unset, e.unsetAuth} {
		if len(names) > 0 {
			e.httpRemove[i] = []string{strings.Join(names, ",")}
		}
	}
	return e
}

// tokenCache is a bounded LRU of verified tokens. An entry is valid until
// the token's exp and only while the key that verified it is still in its
// provider's set; both are checked on read, so no goroutine is needed
// (golang-lru's expirable cache starts one that never stops).
type tokenCache struct {
	lru *lru.Cache[string, *entry]
	m   *metrics
}

func newTokenCache(size int, m *metrics) (*tokenCache, error) {
	c, err := lru.New[string, *entry](size)
	if err != nil {
		return nil, err
	}
	return &tokenCache{lru: c, m: m}, nil
}

func (c *tokenCache) get(token string, now time.Time) *entry {
	if c == nil {
		return nil
	}
	e, ok := c.lru.Get(token)
	if ok && now.Before(e.v.exp) && e.v.provider.hasKey(e.v.keyID) {
		c.m.cacheHits.Inc()
		return e
	}
	if ok {
		c.lru.Remove(token)
	}
	c.m.cacheMisses.Inc()
	return nil
}

func (c *tokenCache) add(token string, e *entry) {
	if c != nil {
		c.lru.Add(token, e)
	}
}
