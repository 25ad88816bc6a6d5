package extauthz

import (
	"io"
	"log/slog"
	"testing"

	"github.com/tokengate/tokengate/internal/benchkit"
	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
)

// BenchmarkCheckDPoP measures a cached Check (ES256 token) with the token
// sent as Bearer and, in the same run, DPoP-bound with a fresh ES256 proof
// per request (verified on every check: signature, claims, replay cache).
// Proofs are signed before the timer starts, so what is measured is
// extauthz's side only; cpu-ns/op is the process's CPU time per check
// (waiting for a core on a shared machine not counted). Figures:
// docs/benchmarks.md (DPoP).
func BenchmarkCheckDPoP(b *testing.B) {
	for _, mode := range []string{"bearer", "dpop"} {
		b.Run(mode, func(b *testing.B) {
			k := newTestKey(b, "ES256", "bench")
			h := newHarness(b, baseConfig(b, k), func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
			now := h.clock.Now()
			tok := k.token(b, claimsAt(now))
			headers := map[string]string{"authorization": "Bearer " + tok}
			var pool []string
			if mode == "dpop" {
				key := dpoptest.NewKey(b, "ES256")
				tok = k.token(b, with(claimsAt(now), "cnf", map[string]any{"jkt": key.JKT()}))
				// One distinct proof per check, signed before the timer starts.
				pool = make([]string, b.N+1)
				for i := range pool {
					pool[i] = key.Proof("GET", "https://app.test/api/things", dpoptest.WithATH(tok), dpoptest.WithIAT(now))
				}
				headers = map[string]string{"authorization": "DPoP " + tok, "dpop": pool[b.N]}
			}
			req := checkReq("GET", "app.test", "/api/things", headers)
			if resp, err := h.srv.Check(b.Context(), req); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("check: %v %v", resp, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := benchkit.StartCPU()
			for i := 0; i < b.N; i++ {
				if pool != nil {
					headers["dpop"] = pool[i]
				}
				if resp, _ := h.srv.Check(b.Context(), req); resp.GetOkResponse() == nil {
					b.Fatalf("refused: %v", resp)
				}
			}
			cpu.Report(b)
		})
	}
}
