package redisstore

import (
	"context"
	"fmt"

	"github.com/tokengate/tokengate/refresher/store"
)

// redis:// and rediss:// (TLS) open the store on a standalone server,
// Sentinel or Cluster, as the URL says (see parseURL).
func init() {
	open := func(ctx context.Context, uri string, o store.OpenOptions) (store.Store, error) {
		s, err := Open(ctx, uri, Options{SentinelMaster: o.RedisSentinelMaster, Timeout: o.RedisTimeout, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return s, nil
	}
	store.Register("redis", open)
	store.Register("rediss", open)
}
