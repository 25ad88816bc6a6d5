package store

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// OpenOptions are the backend settings that a store URI does not carry.
// A backend ignores the ones that are not its own.
type OpenOptions struct {
	// RedisSentinelMaster names the Sentinel master set; the redis:// hosts
	// are then Sentinels.
	RedisSentinelMaster string
	// RedisTimeout bounds each Redis command (zero: the backend's default).
	RedisTimeout time.Duration
	// Logger receives the backend's own messages; nil discards them.
	Logger *slog.Logger
}

// OpenFunc opens a store from its whole URI (scheme included), for the
// scheme it was registered under.
type OpenFunc func(ctx context.Context, uri string, opts OpenOptions) (Store, error)

var registry = struct {
	sync.RWMutex
	open map[string]OpenFunc
}{open: map[string]OpenFunc{}}

// Register makes a backend available to Open under scheme (the part of a
// store URI before "://"). Backends call it from an init function, so a
// program offers the backends it imports. Registering a scheme twice, or a
// nil OpenFunc, is a programming error and panics, as database/sql.Register
// does.
func Register(scheme string, open OpenFunc) {
	if scheme == "" || strings.Contains(scheme, "://") {
		panic(fmt.Sprintf("store: Register of an invalid scheme %q", scheme))
	}
	if open == nil {
		panic("store: Register of a nil OpenFunc for scheme " + scheme)
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.open[scheme]; dup {
		panic("store: Register called twice for scheme " + scheme)
	}
	registry.open[scheme] = open
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]string, 0, len(registry.open))
	for s := range registry.open {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Open opens the store a URI names (memory://, bolt://PATH, redis://…),
// with the backend registered for its scheme. An unknown scheme is an error
// listing the registered ones.
func Open(ctx context.Context, uri string, opts OpenOptions) (Store, error) {
	scheme, _, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("store: %q is not a URI (%s)", uri, schemeHint())
	}
	registry.RLock()
	open := registry.open[scheme]
	registry.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("store: unsupported scheme %q (%s)", scheme, schemeHint())
	}
	return open(ctx, uri, opts)
}

// schemeHint lists the registered schemes for an error message:
// "use bolt://, memory:// or redis://".
func schemeHint() string {
	s := Schemes()
	if len(s) == 0 {
		return "no store backend is registered"
	}
	for i := range s {
		s[i] += "://"
	}
	if len(s) == 1 {
		return "use " + s[0]
	}
	return "use " + strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
