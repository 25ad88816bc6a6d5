package fault

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestKill9Bolt kills the refresher (bolt store) with SIGKILL N times while
// clients refresh as fast as they can, each always presenting its newest
// token or retrying the one whose answer was lost. No session may be lost
// or revoked (the revocation feed stays empty), and the file passes bbolt's
// consistency check. N = 5 under 20 clients in `go test`; 20 under 50 with
// TOKENGATE_FAULT_LONG=1.
func TestKill9Bolt(t *testing.T) {
	kills := pick(5, 20)
	nClients := pick(20, 50)
	path := filepath.Join(t.TempDir(), "tokengate.db")
	r := startRefresher(t, "bolt://"+path)
	clients := newClients(t, r.URL, "kill9", nClients)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runClients(ctx, r.URL, clients)
	}()
	start := time.Now()
	for range kills {
		// Let the clients rotate for a while, then kill mid-traffic.
		time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond)
		r.Kill9()
		r.Restart()
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	settle(t, r.URL, clients, 30*time.Second)
	elapsed := time.Since(start)

	rotations, retries, lost := 0, 0, 0
	for _, c := range clients {
		rotations += c.Rotations
		retries += c.Retries
		if c.Lost != nil {
			lost++
			t.Errorf("client %s lost its session: %v", c.Sub, c.Lost)
		}
	}
	if n := feedLen(t, r.URL); n != 0 {
		t.Errorf("%d sessions revoked (reuse detected) by the kills, want 0", n)
	}
	r.Stop()
	boltCheck(t, path)
	t.Logf("%d kill -9 in %v: %d clients, %d refreshes answered, %d lost answers or 503s retried, %d sessions lost, bolt check clean, file %d bytes",
		kills, elapsed.Round(time.Second), nClients, rotations, retries, lost, fileSize(t, path))
}
