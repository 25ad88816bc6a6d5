package main

import (
	"context"

	"github.com/tokengate/tokengate/refresher/store"
	// The store backends --store can name; each registers its schemes.
	_ "github.com/tokengate/tokengate/refresher/store/boltstore"
	_ "github.com/tokengate/tokengate/refresher/store/memstore"
	_ "github.com/tokengate/tokengate/refresher/store/redisstore"
)

// storeOptions carries the backend settings that are not in the URI.
type storeOptions = store.OpenOptions

// openStore opens the refresher's store from its --store URI:
// memory:// | bolt://PATH | redis://… | rediss://….
func openStore(ctx context.Context, uri string, o storeOptions) (store.Store, error) {
	return store.Open(ctx, uri, o)
}
