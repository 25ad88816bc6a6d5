package extauthz

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lru "github.com/hashicorp/golang-lru/v2"
)

// entry is a verified token with everything an allow needs, computed once:
// identity headers, roles and scopes.
type entry struct {
	v   *verified
	set []header
	// setProto is set as Envoy headers, built once: protos are read-only
	// once built, so concurrent responses may share them.
	setProto []*corev3.HeaderValueOption
	unset    []string
	roles    []string
	scopes   []string
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
