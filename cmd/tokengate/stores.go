package main

import (
	"context"
	"path/filepath"
	"strings"

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

// boltDir returns the directory of a bolt:// store's file ("" for other
// stores): where --dev keeps the generated key and admin token.
func boltDir(uri string) string {
	if path, ok := strings.CutPrefix(uri, "bolt://"); ok && path != "" {
		return filepath.Dir(path)
	}
	return ""
}
