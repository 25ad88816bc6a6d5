package redisstore_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

// BenchmarkRedis measures, in one run against one real redis-server:
//
//   - rotate: a full refresh (the refresher's Issuer.Refresh), each op
//     rotating a chain of tokens on the replica that issued them: the
//     access token is minted and ES256-signed from the replica's snapshot of
//     the session, the pair sealed, and one call of the Rotate script
//     decides and checks the snapshot current (one round trip);
//   - rotate-cold: the same chain with every token refreshed on the other
//     of two replicas, which has no snapshot: the token and its session are
//     read in one pipeline, then the Rotate script (two round trips);
//   - baseline: the floor any rotation pays — one ES256 sign of a typical
//     access-token payload plus one Redis round trip (PING);
//   - rotate-limited-serial: rotate with the per-IP and per-session rate
//     limits on (kept in Redis, never reached): what the shared limits add.
//
// Both run serially and in parallel (throughput); docs/benchmarks.md
// reports rotate/baseline ratios.
func BenchmarkRedis(b *testing.B) {
	r := proctest.StartRedis(b)
	ctx := context.Background()
	st, err := redisstore.Open(ctx, "redis://"+r.Addr, redisstore.Options{PoolSize: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()

	key, err := keyset.Generate(jwa.ES256())
	if err != nil {
		b.Fatal(err)
	}
	keys, err := keyset.Assemble([]jwk.Key{key}, "")
	if err != nil {
		b.Fatal(err)
	}
	cfg := refresher.Defaults()
	cfg.Issuer, cfg.Audience, cfg.AdminToken = "https://auth.bench", []string{"api"}, "bench-admin-token"
	cfg.RateLimitIP, cfg.RateLimitSession = 0, 0
	srv, err := refresher.NewServer(cfg, refresher.Options{Store: st, Keys: keys,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	iss := srv.Issuer()
	payload, _ := json.Marshal(map[string]any{
		"iss": cfg.Issuer, "sub": "alice", "aud": cfg.Audience, "exp": time.Now().Add(15 * time.Minute).Unix(),
		"iat": time.Now().Unix(), "nbf": time.Now().Unix(), "jti": "0123456789abcdef0123456789abcdef",
		"sid": "0123456789abcdef0123456789abcdef", "name": "Alice", "roles": []string{"admin", "dev"},
	})
	limitedCfg := cfg
	limitedCfg.RateLimitIP, limitedCfg.RateLimitIPBurst = 1e9, 1e9
	limitedCfg.RateLimitSession, limitedCfg.RateLimitSessionBurst = 1e9, 1e9
	limited, err := refresher.NewServer(limitedCfg, refresher.Options{Store: st, Keys: keys,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	other, err := refresher.NewServer(cfg, refresher.Options{Store: st, Keys: keys,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	var sessions atomic.Int64
	chainOn := func(b *testing.B, iss *refresher.Issuer) func() {
		p, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "bench-" + strconv.FormatInt(sessions.Add(1), 10)})
		if err != nil {
			b.Fatal(err)
		}
		tok := p.RefreshToken
		return func() {
			p, err := iss.Refresh(ctx, tok, refresher.Client{IP: "127.0.0.1"})
			if err != nil {
				b.Fatal(err)
			}
			tok = p.RefreshToken
		}
	}
	chain := func(b *testing.B) func() { return chainOn(b, iss) }
	baseline := func(b *testing.B) {
		if _, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key)); err != nil {
			b.Fatal(err)
		}
		if err := st.Client().Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("baseline-serial", func(b *testing.B) {
		for b.Loop() {
			baseline(b)
		}
	})
	b.Run("rotate-serial", func(b *testing.B) {
		next := chain(b)
		for b.Loop() {
			next()
		}
	})
	b.Run("rotate-cold-serial", func(b *testing.B) {
		p, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "bench-" + strconv.FormatInt(sessions.Add(1), 10)})
		if err != nil {
			b.Fatal(err)
		}
		tok, replicas, n := p.RefreshToken, [2]*refresher.Issuer{other.Issuer(), iss}, 0
		for b.Loop() {
			p, err := replicas[n%2].Refresh(ctx, tok, refresher.Client{IP: "127.0.0.1"})
			if err != nil {
				b.Fatal(err)
			}
			tok, n = p.RefreshToken, n+1
		}
	})
	b.Run("rotate-limited-serial", func(b *testing.B) {
		next := chainOn(b, limited.Issuer())
		for b.Loop() {
			next()
		}
	})
	b.Run("baseline-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				baseline(b)
			}
		})
	})
	b.Run("rotate-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			next := chain(b)
			for pb.Next() {
				next()
			}
		})
	})
}
