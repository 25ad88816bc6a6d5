package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

// openURL opens a fresh store at url: each gets its own key prefix, so the
// suite's parallel subtests (and the revocation feed they compare exactly)
// do not see each other on one server.
func openURL(t *testing.T, url string) *redisstore.Store {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	s, err := redisstore.Open(context.Background(), url,
		redisstore.Options{KeyPrefix: "test-" + hex.EncodeToString(b) + ":"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	return s
}

func openOn(r *proctest.Redis, split bool) func(t *testing.T) store.Store {
	return func(t *testing.T) store.Store {
		t.Helper()
		s := openURL(t, "redis://"+r.Addr+"/0")
		if split {
			redisstore.SplitKeys(s)
		}
		return s
	}
}

func TestConformance(t *testing.T) {
	r := proctest.StartRedis(t)
	storetest.Run(t, openOn(r, false))
}

// TestConformanceClusterPath runs the suite with the Cluster write path
// (index, subject and feed keys written outside the session's script).
func TestConformanceClusterPath(t *testing.T) {
	r := proctest.StartRedis(t)
	storetest.Run(t, openOn(r, true))
}
