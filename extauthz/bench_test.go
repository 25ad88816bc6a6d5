package extauthz

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
)

// BenchmarkCheck measures Check for each algorithm with the verified-token
// cache (the steady state: one token, many requests) and without it (every
// check verifies the signature). Figures: docs/benchmarks.md.
func BenchmarkCheck(b *testing.B) {
	for _, alg := range []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"} {
		for _, cached := range []bool{true, false} {
			name := "uncached"
			if cached {
				name = "cached"
			}
			b.Run(fmt.Sprintf("%s/%s", alg, name), func(b *testing.B) {
				k := newTestKey(b, alg, "bench")
				cfg := baseConfig(b, k)
				cfg.Cache.Disabled = !cached
				// Production logging: JSON at info, so allows are not logged.
				h := newHarness(b, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
				req := bearerReq(k.token(b, claimsAt(h.clock.Now())))
				ctx := b.Context()
				if resp, err := h.srv.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("check: %v %v", resp, err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					h.srv.Check(ctx, req)
				}
			})
		}
	}
}
