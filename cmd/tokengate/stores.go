package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
	"github.com/tokengate/tokengate/refresher/store/memstore"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// storeOptions carries the backend settings that are not in the URI.
type storeOptions struct {
	// RedisSentinelMaster names the Sentinel master set (redis:// with
	// Sentinel addresses); RedisTimeout bounds each Redis command.
	RedisSentinelMaster string
	RedisTimeout        time.Duration
	Logger              *slog.Logger
}

// openStore opens the refresher's store from its --store URI:
// memory:// | bolt://PATH | redis://… | rediss://….
func openStore(ctx context.Context, uri string, o storeOptions) (store.Store, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("store: %q is not a URI (use memory://, bolt://PATH or redis://HOST:PORT)", uri)
	}
	switch scheme {
	case "memory":
		return memstore.New(), nil
	case "bolt":
		if rest == "" {
			return nil, fmt.Errorf("store: bolt:// needs a file path, e.g. bolt://tokengate.db or bolt:///var/lib/tokengate/tokengate.db")
		}
		return boltstore.Open(rest)
	case "redis", "rediss":
		s, err := redisstore.Open(ctx, uri, redisstore.Options{
			SentinelMaster: o.RedisSentinelMaster,
			Timeout:        o.RedisTimeout,
			Logger:         o.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("store: unsupported scheme %q (use memory://, bolt://PATH or redis://HOST:PORT)", scheme)
}
