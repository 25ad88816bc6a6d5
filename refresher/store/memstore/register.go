package memstore

import (
	"context"

	"github.com/tokengate/tokengate/refresher/store"
)

// memory:// opens an empty store; anything after the scheme is ignored.
func init() {
	store.Register("memory", func(context.Context, string, store.OpenOptions) (store.Store, error) {
		return New(), nil
	})
}
