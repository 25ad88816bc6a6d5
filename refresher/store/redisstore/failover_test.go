package redisstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// TestSentinelFailover: a store opened through Sentinel keeps working when
// the primary dies and Sentinel promotes the replica; a session replicated
// before the failover is still there and rotates.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("failover takes a few seconds")
	}
	primary := proctest.StartRedis(t)
	host, pport, _ := strings.Cut(primary.Addr, ":")
	proctest.StartRedis(t, "--replicaof", host, pport)
	bin := proctest.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	port := proctest.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor tgm %s %s 1\n"+
		"sentinel down-after-milliseconds tgm 500\nsentinel failover-timeout tgm 5000\n", port, dir, host, pport)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sentinel := proctest.Start(t, "redis-sentinel", nil, bin, conf, "--sentinel")
	sentinelAddr := "127.0.0.1:" + strconv.Itoa(port)
	sentinel.WaitTCP(t, sentinelAddr, 10*time.Second)

	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+sentinelAddr, redisstore.Options{SentinelMaster: "tgm", Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC().Truncate(time.Second)
	sess := store.Session{ID: "fo-sid", Subject: "u", CreatedAt: now, IdleTTL: time.Hour, ExpiresAt: now.Add(24 * time.Hour)}
	first := store.Token{Hash: "fo-1", SessionID: sess.ID, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, sess, first); err != nil {
		t.Fatal(err)
	}
	// Make sure the replica has it before the primary dies (asynchronous
	// replication would otherwise lose it; see docs/operations.md).
	for i := 0; ; i++ {
		n, err := s.Client().Do(ctx, "WAIT", 1, 300).Int()
		if err == nil && n >= 1 {
			break
		}
		if i == 50 {
			t.Fatalf("WAIT for the replica = %d, %v", n, err)
		}
	}

	primary.Stop()
	// Waiting for Sentinel to promote the replica (start-up-like polling
	// on an external state change, bounded).
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := s.GetSession(ctx, sess.ID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store not serving 60s after the primary died: %v\n%s", err, sentinel.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	res, err := s.Rotate(ctx, store.RotateRequest{ParentHash: first.Hash, Sealed: []byte("p"), Now: now.Add(time.Minute), Grace: time.Second,
		RevokeUntil: now.Add(16 * time.Minute), Child: store.Token{Hash: "fo-2", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}})
	if err != nil || res.Outcome != store.Rotated {
		t.Fatalf("Rotate on the promoted replica = %v, %v; want rotated", res.Outcome, err)
	}
	if role, _ := s.Client().Do(ctx, "ROLE").Slice(); len(role) == 0 || role[0] != "master" {
		t.Errorf("store talks to %v, want the promoted master", role)
	}
}
