package refresher_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
	"github.com/tokengate/tokengate/refresher/store/memstore"
	"github.com/tokengate/tokengate/refresher/store/redisstore"
)

func benchIssuer(b *testing.B, st store.Store) *refresher.Issuer {
	b.Helper()
	cfg := testConfig()
	cfg.RateLimitIP, cfg.RateLimitSession = 0, 0
	srv, err := refresher.NewServer(cfg, refresher.Options{Store: st, Keys: generateKeys(b),
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return srv.Issuer()
}

func benchStores(b *testing.B) map[string]func() store.Store {
	return map[string]func() store.Store{
		"memory": func() store.Store { return memstore.New() },
		"bolt": func() store.Store {
			s, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		// A real redis-server on loopback (no persistence), one per benchmark.
		"redis": func() store.Store {
			r := proctest.StartRedis(b)
			s, err := redisstore.Open(context.Background(), "redis://"+r.Addr, redisstore.Options{Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
}

// BenchmarkRotate: one full rotation per op (store reads, mint and sign the
// access token, seal, atomic Rotate), along a chain of tokens.
func BenchmarkRotate(b *testing.B) {
	for _, name := range []string{"memory", "bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			st := benchStores(b)[name]()
			defer st.Close()
			iss := benchIssuer(b, st)
			ctx := context.Background()
			p, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "alice"})
			if err != nil {
				b.Fatal(err)
			}
			tok := p.RefreshToken
			b.ResetTimer()
			for b.Loop() {
				p, err = iss.Refresh(ctx, tok, refresher.Client{IP: "127.0.0.1"})
				if err != nil {
					b.Fatal(err)
				}
				tok = p.RefreshToken
			}
		})
	}
}

// BenchmarkReplay: the same parent presented again inside the grace window,
// answered from the in-process LRU: one session read (the store still
// decides), unseal, no signing, no store write.
func BenchmarkReplay(b *testing.B) {
	for _, name := range []string{"memory", "bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			st := benchStores(b)[name]()
			defer st.Close()
			iss := benchIssuer(b, st)
			ctx := context.Background()
			p, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "alice"})
			if err != nil {
				b.Fatal(err)
			}
			parent := p.RefreshToken
			want, err := iss.Refresh(ctx, parent, refresher.Client{})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				got, err := iss.Refresh(ctx, parent, refresher.Client{})
				if err != nil || got.RefreshToken != want.RefreshToken {
					b.Fatalf("replay: %v", err)
				}
			}
		})
	}
}

// BenchmarkStartSession is the baseline the others are read against: one
// session = one signature plus one store write, no rotation logic.
func BenchmarkStartSession(b *testing.B) {
	iss := benchIssuer(b, memstore.New())
	ctx := context.Background()
	for b.Loop() {
		if _, err := iss.StartSession(ctx, refresher.SessionRequest{Subject: "alice", IdleTTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
}
