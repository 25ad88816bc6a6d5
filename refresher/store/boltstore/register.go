package boltstore

import (
	"context"
	"errors"
	"strings"

	"github.com/tokengate/tokengate/refresher/store"
)

// bolt://PATH opens the file at PATH: bolt://tokengate.db is relative to
// the working directory, bolt:///var/lib/… absolute.
func init() {
	store.Register("bolt", func(_ context.Context, uri string, _ store.OpenOptions) (store.Store, error) {
		path := strings.TrimPrefix(uri, "bolt://")
		if path == "" {
			return nil, errors.New("store: bolt:// needs a file path, e.g. bolt://tokengate.db or bolt:///var/lib/tokengate/tokengate.db")
		}
		s, err := Open(path)
		if err != nil {
			return nil, err
		}
		return s, nil
	})
}
