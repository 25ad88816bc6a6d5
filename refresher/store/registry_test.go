package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
	"github.com/tokengate/tokengate/refresher/store/memstore"
	_ "github.com/tokengate/tokengate/refresher/store/redisstore"
)

// The backends register their schemes by being imported; Open picks the
// backend by scheme and passes it the settings of OpenOptions. Not
// parallel: TestRegister adds a scheme, and the error messages here list
// exactly the real backends'.
func TestOpen(t *testing.T) {
	ctx := context.Background()
	if got, want := store.Schemes(), []string{"bolt", "memory", "redis", "rediss"}; !cmp.Equal(got, want) {
		t.Errorf("Schemes() = %v, want %v", got, want)
	}

	mem, err := store.Open(ctx, "memory://", store.OpenOptions{})
	if err != nil {
		t.Fatalf("memory://: %v", err)
	}
	if _, ok := mem.(*memstore.Store); !ok {
		t.Errorf("memory:// opened a %T", mem)
	}
	mem.Close()

	bolt, err := store.Open(ctx, "bolt://"+filepath.Join(t.TempDir(), "sub", "tokengate.db"), store.OpenOptions{})
	if err != nil {
		t.Fatalf("bolt://PATH: %v", err)
	}
	if _, ok := bolt.(*boltstore.Store); !ok {
		t.Errorf("bolt:// opened a %T", bolt)
	}
	bolt.Close()

	// The messages the refresher printed before the registry existed.
	errorCases := []struct {
		uri  string
		opts store.OpenOptions
		want string
	}{
		{"tokengate.db", store.OpenOptions{},
			`store: "tokengate.db" is not a URI (use bolt://, memory://, redis:// or rediss://)`},
		{"postgres://db/tokengate", store.OpenOptions{},
			`store: unsupported scheme "postgres" (use bolt://, memory://, redis:// or rediss://)`},
		{"bolt://", store.OpenOptions{},
			"store: bolt:// needs a file path, e.g. bolt://tokengate.db or bolt:///var/lib/tokengate/tokengate.db"},
		// The Redis settings reach the backend (it refuses them before dialling).
		{"redis://127.0.0.1:1?sentinel_master=a", store.OpenOptions{RedisSentinelMaster: "b"},
			`store: redis URL: sentinel_master "a" differs from --redis-sentinel-master "b"`},
		{"rediss://127.0.0.1:1", store.OpenOptions{RedisTimeout: -time.Second},
			"store: redis timeout -1s: must be positive"},
	}
	for _, tc := range errorCases {
		s, err := store.Open(ctx, tc.uri, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Open(%q) error = %v\nwant %s", tc.uri, err, tc.want)
		}
		if s != nil {
			t.Errorf("Open(%q) returned a store (%T) with its error", tc.uri, s)
		}
	}
}

// A backend registered under a new scheme gets the whole URI and the
// options, and the unknown-scheme message lists it from then on.
func TestRegister(t *testing.T) {
	type call struct {
		uri  string
		opts store.OpenOptions
	}
	var got []call
	store.Register("regtest", func(_ context.Context, uri string, o store.OpenOptions) (store.Store, error) {
		got = append(got, call{uri, o})
		return memstore.New(), nil
	})
	opts := store.OpenOptions{RedisTimeout: 3 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	if _, err := store.Open(context.Background(), "regtest://x/y?z=1", opts); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].uri != "regtest://x/y?z=1" || got[0].opts != opts {
		t.Errorf("OpenFunc calls = %+v", got)
	}
	_, err := store.Open(context.Background(), "nope://", store.OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), "rediss:// or regtest://") {
		t.Errorf("unknown scheme error = %v; want the new scheme listed", err)
	}

	for _, tc := range []struct {
		scheme string
		open   store.OpenFunc
		want   string
	}{
		{"regtest", func(context.Context, string, store.OpenOptions) (store.Store, error) { return nil, nil }, "store: Register called twice for scheme regtest"},
		{"memory", func(context.Context, string, store.OpenOptions) (store.Store, error) { return nil, nil }, "store: Register called twice for scheme memory"},
		{"other", nil, "store: Register of a nil OpenFunc for scheme other"},
		{"", func(context.Context, string, store.OpenOptions) (store.Store, error) { return nil, nil }, `store: Register of an invalid scheme ""`},
		{"a://b", func(context.Context, string, store.OpenOptions) (store.Store, error) { return nil, nil }, `store: Register of an invalid scheme "a://b"`},
	} {
		func() {
			defer func() {
				if r := recover(); fmt.Sprint(r) != tc.want {
					t.Errorf("Register(%q) panicked with %v, want %q", tc.scheme, r, tc.want)
				}
			}()
			store.Register(tc.scheme, tc.open)
		}()
	}
}
