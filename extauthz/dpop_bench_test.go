package extauthz

import (
	"io"
	"log/slog"
	"testing"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
)

// BenchmarkCheckDPoP measures a cached Check (ES256 token) with the token
// sent as Bearer and, in the same run, DPoP-bound with a fresh ES256 proof
// per request (verified on every check: signature, claims, replay cache).
// Proofs are signed before the timed loop (a pool refilled with the timer
// stopped), so what is measured is extauthz's side only. Figures:
// docs/benchmarks.md (DPoP).
func BenchmarkCheckDPoP(b *testing.B) {
	for _, mode := range []string{"bearer", "dpop"} {
		b.Run(mode, func(b *testing.B) {
			k := newTestKey(b, "ES256", "bench")
			h := newHarness(b, baseConfig(b, k), func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
			now := h.clock.Now()
			if mode == "bearer" {
				req := bearerReq(k.token(b, claimsAt(now)))
				if resp, err := h.srv.Check(b.Context(), req); err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("check: %v %v", resp, err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					h.srv.Check(b.Context(), req)
				}
				return
			}
			key := dpoptest.NewKey(b, "ES256")
			tok := k.token(b, with(claimsAt(now), "cnf", map[string]any{"jkt": key.JKT()}))
			var pool []string
			fill := func() {
				pool = pool[:0]
				for range 2000 {
					pool = append(pool, key.Proof("GET", "https://app.test/api/things", dpoptest.WithATH(tok), dpoptest.WithIAT(now)))
				}
			}
			fill()
			headers := map[string]string{"authorization": "DPoP " + tok, "dpop": pool[0]}
			req := checkReq("GET", "app.test", "/api/things", headers)
			if resp, err := h.srv.Check(b.Context(), req); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("check: %v %v", resp, err)
			}
			next := 1
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if next == len(pool) {
					b.StopTimer()
					fill()
					next = 0
					b.StartTimer()
				}
				headers["dpop"] = pool[next]
				next++
				if resp, _ := h.srv.Check(b.Context(), req); resp.GetOkResponse() == nil {
					b.Fatalf("refused: %v", resp)
				}
			}
		})
	}
}
