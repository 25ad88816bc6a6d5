package redisstore_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// TestSizing measures Redis memory per session through the real issuer:
// TOKENGATE_SIZING_SESSIONS=N creates N sessions (with a typical claims
// object) and reads INFO memory; then, five times, rotates every session,
// waits out the grace window so the sealed pairs expire, and reads it
// again. Skipped unless
// the variable is set; docs/operations.md extrapolates its figures.
func TestSizing(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TOKENGATE_SIZING_SESSIONS"))
	if n <= 0 {
		t.Skip("set TOKENGATE_SIZING_SESSIONS=N to measure Redis memory per session")
	}
	// TOKENGATE_SIZING_REDIS_ARGS adds redis-server options, e.g.
	// "--hash-max-listpack-value 128".
	r := proctest.StartRedis(t, strings.Fields(os.Getenv("TOKENGATE_SIZING_REDIS_ARGS"))...)
	ctx := context.Background()
	st, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{PoolSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, _ := keyset.Generate(jwa.ES256())
	keys, _ := keyset.Assemble([]jwk.Key{key}, "")
	cfg := refresher.Defaults()
	cfg.Issuer, cfg.Audience, cfg.AdminToken = "https://auth.example.com", []string{"api"}, "sizing-admin-token"
	cfg.RateLimitIP, cfg.RateLimitSession = 0, 0
	cfg.ReuseGrace = time.Second
	srv, err := refresher.NewServer(cfg, refresher.Options{Store: st, Keys: keys,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	iss := srv.Issuer()

	used := func() int64 {
		info, err := st.Client().Info(ctx, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory in INFO memory")
		return 0
	}
	parallel := func(fn func(i int)) {
		var wg sync.WaitGroup
		const workers = 16
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					fn(i)
				}
			}()
		}
		wg.Wait()
	}

	claims := []byte(`{"name":"Ada Lovelace","email":"ada@example.com","roles":["admin","dev"],"tenant":"t-42"}`)
	tokens := make([]string, n)
	before := used()
	parallel(func(i int) {
		p, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "user-" + strconv.Itoa(i), Claims: claims})
		if err != nil {
			t.Error(err)
			return
		}
		tokens[i] = p.RefreshToken
	})
	created := used()
	// rotateAll rotates every session once and returns used_memory with
	// the sealed pairs still present and after they expired.
	rotateAll := func() (withSealed, settled int64) {
		parallel(func(i int) {
			p, err := iss.Refresh(ctx, tokens[i], refresher.Client{IP: "127.0.0.1"})
			if err != nil {
				t.Error(err)
				return
			}
			tokens[i] = p.RefreshToken
		})
		withSealed = used()
		// The sealed pairs expire after grace + slack. Redis expires keys
		// lazily or by sampling; a full SCAN expires every key it visits.
		time.Sleep(cfg.ReuseGrace + 3*time.Second)
		var cursor uint64
		for {
			_, next, err := st.Client().Scan(ctx, cursor, "*", 5000).Result()
			if err != nil {
				t.Fatal(err)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		return withSealed, used()
	}
	rotatedWithSealed, rotated := rotateAll()
	const more = 4
	last := rotated
	for range more {
		_, last = rotateAll()
	}
	keysLeft, _ := st.Client().DBSize(ctx).Result()

	perSession := float64(created-before) / float64(n)
	firstRotation := float64(rotated-created) / float64(n)
	perRotation := float64(last-rotated) / float64(n*more)
	perSealed := float64(rotatedWithSealed-rotated) / float64(n)
	t.Logf("sessions %d: %.0f B/session at sign-in, +%.0f B for the first rotation, +%.0f B per further rotation, +%.0f B per sealed pair (grace window only); keys now %d",
		n, perSession, firstRotation, perRotation, perSealed, keysLeft)
	t.Logf("per million sessions: %.0f MiB at sign-in, +%.0f MiB for the first rotation, +%.0f MiB per further rotation",
		perSession*1e6/(1<<20), firstRotation*1e6/(1<<20), perRotation*1e6/(1<<20))
}
