package fault

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
)

// aofAlways is the Redis persistence docs/operations.md recommends.
var aofAlways = []string{"--appendonly", "yes", "--appendfsync", "always"}

// TestKill9RefresherRedis is TestKill9Bolt on the Redis store: the
// refresher is killed with SIGKILL N times while clients refresh as fast
// as they can, each presenting its newest token or retrying the one whose
// answer was lost. No session may be lost or revoked. N = 5 under 20
// clients; 20 under 50 with TOKENGATE_FAULT_LONG=1.
func TestKill9RefresherRedis(t *testing.T) {
	redis := proctest.StartRedis(t, aofAlways...)
	r := startRefresher(t, "redis://"+redis.Addr)
	clients := underKills(t, r.URL, "kill9-refresher-redis", func() {
		r.Kill9()
		r.Restart()
	})
	checkNoneLost(t, r.URL, clients)
}

// TestKill9RedisAppendfsyncAlways kills redis-server (not the refresher)
// with SIGKILL N times under the same clients and restarts it from its
// append-only file. With appendfsync always every rotation Redis
// acknowledged is on disk, so no session is lost; a rotation whose answer
// the kill cut is answered 503 and its retry replays it. No session may be
// lost or revoked.
func TestKill9RedisAppendfsyncAlways(t *testing.T) {
	redis := proctest.StartRedis(t, aofAlways...)
	r := startRefresher(t, "redis://"+redis.Addr, "--redis-timeout", "500ms")
	clients := underKills(t, r.URL, "kill9-redis-always", func() {
		redis.Stop() // SIGKILL
		redis.Restart(aofAlways...)
	})
	checkNoneLost(t, r.URL, clients)
}

// TestKill9RedisEverysecMeasure is the same with appendfsync everysec, for
// docs/operations.md ("Redis durability"): a kill -9 of the process loses
// what Redis had not yet written to the OS, normally nothing. It measures
// and asserts nothing (long variant only).
func TestKill9RedisEverysecMeasure(t *testing.T) {
	if !long() {
		t.Skip("a measurement; runs with TOKENGATE_FAULT_LONG=1")
	}
	everysec := []string{"--appendonly", "yes", "--appendfsync", "everysec"}
	redis := proctest.StartRedis(t, everysec...)
	r := startRefresher(t, "redis://"+redis.Addr, "--redis-timeout", "500ms")
	underKills(t, r.URL, "kill9-redis-everysec", func() {
		redis.Stop()
		redis.Restart(everysec...)
	})
}

// underKills signs in the clients, runs them, calls kill N times at random
// moments of their traffic, lets every client refresh once more, logs the
// figures and returns the clients.
func underKills(t *testing.T, base, prefix string, kill func()) []*client {
	t.Helper()
	kills := pick(5, 20)
	clients := newClients(t, base, prefix, pick(20, 50))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runClients(ctx, base, clients)
	}()
	start := time.Now()
	for range kills {
		// Let the clients rotate for a while, then kill mid-traffic.
		time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond)
		kill()
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	settle(t, base, clients, 30*time.Second)
	rotations, retries, lost := 0, 0, 0
	for _, c := range clients {
		rotations += c.Rotations
		retries += c.Retries
		if c.Lost != nil {
			lost++
		}
	}
	t.Logf("%s: %d kills in %v, %d clients: %d refreshes answered, %d lost answers or 503s retried, %d sessions lost, %d revoked",
		prefix, kills, time.Since(start).Round(time.Second), len(clients), rotations, retries, lost, feedLen(t, base))
	return clients
}

// checkNoneLost fails for every session lost or revoked.
func checkNoneLost(t *testing.T, base string, clients []*client) {
	t.Helper()
	for _, c := range clients {
		if c.Lost != nil {
			t.Errorf("client %s lost its session: %v", c.Sub, c.Lost)
		}
	}
	if n := feedLen(t, base); n != 0 {
		t.Errorf("%d sessions revoked (reuse detected) by the kills, want 0", n)
	}
}
