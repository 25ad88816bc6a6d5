package extauthz

import (
	"crypto"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokengate/tokengate/internal/benchkit"
	"github.com/tokengate/tokengate/internal/tracing/otlptest"
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

// BenchmarkCheckTracing measures a cached Check (ES256) with tracing off
// and on, exporting to a local OTLP/HTTP receiver (which decodes and
// drops what it is sent): for a request carrying a sampled traceparent
// (the check's span is its child), an unsampled one (Envoy sampling a
// fraction of requests: the default parent-based sampler records nothing)
// and none (a new, sampled trace). The batch exporter runs in the same
// process, so its work is part of the time. Figures:
// docs/benchmarks.md (Tracing).
func BenchmarkCheckTracing(b *testing.B) {
	for _, mode := range []string{"off", "on/traceparent", "on/unsampled", "on/new-trace"} {
		b.Run(mode, func(b *testing.B) {
			k := newTestKey(b, "ES256", "bench")
			var tracer trace.Tracer
			if mode != "off" {
				tp, _ := tracedProviderTo(b, otlptest.NewDiscarding(b))
				tracer = tp.Tracer(instrumentationName)
			}
			h := newHarness(b, baseConfig(b, k), func(o *Options) {
				o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
				o.Tracer = tracer
			})
			headers := map[string]string{"authorization": "Bearer " + k.token(b, claimsAt(h.clock.Now()))}
			switch mode {
			case "off", "on/traceparent":
				headers["traceparent"] = traceparent // Envoy with tracing on
			case "on/unsampled":
				headers["traceparent"] = strings.TrimSuffix(traceparent, "01") + "00"
			}
			req := checkReq("GET", "app.test", "/api/things", headers)
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

// BenchmarkForwardAuth measures the HTTP forward-auth handler on a cached
// token (ES256), from the parsed request to the written headers; the
// ResponseWriter only keeps the headers, so what is counted is ours.
func BenchmarkForwardAuth(b *testing.B) {
	k := newTestKey(b, "ES256", "bench")
	cfg := baseConfig(b, k)
	h := newHarness(b, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	r := forwardAuthRequest(k.token(b, claimsAt(h.clock.Now())))
	w := &headerRecorder{h: http.Header{}}
	h.srv.handleForwardAuth(w, r)
	if w.status != http.StatusOK || w.h.Get("X-User-Id") == "" {
		b.Fatalf("forward-auth: %d %v", w.status, w.h)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.srv.handleForwardAuth(w, r)
	}
}

// forwardAuthRequest is what a proxy sends for a browser's API call.
func forwardAuthRequest(token string) *http.Request {
	r := httptest.NewRequest("GET", "/authz/api/orders/42", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	for k, v := range map[string]string{
		"Accept": "application/json", "Accept-Encoding": "gzip, br", "Accept-Language": "en-GB,en;q=0.9",
		"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)", "X-Forwarded-For": "203.0.113.7",
		"X-Forwarded-Proto": "https", "X-Request-Id": "6f1c1c1e-4b1a-4d7e-9a55-0d1f3f1a2b3c",
	} {
		r.Header.Set(k, v)
	}
	return r
}

// headerRecorder is an http.ResponseWriter that keeps the status and headers.
type headerRecorder struct {
	h      http.Header
	status int
}

func (w *headerRecorder) Header() http.Header         { return w.h }
func (w *headerRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (w *headerRecorder) WriteHeader(status int)      { w.status = status }

// uncachedPool is how many distinct tokens the uncached benchmarks cycle
// through: more than their cache holds (uncachedCacheSize), so every check
// misses, verifies, and inserts an entry evicting the oldest — a token seen
// for the first time on a server whose cache is full.
const (
	uncachedPool      = 512
	uncachedCacheSize = 64
)

// uncachedTokens signs uncachedPool tokens that differ in jti.
func uncachedTokens(b *testing.B, k *testKey, now time.Time) []string {
	toks := make([]string, uncachedPool)
	for i := range toks {
		c := claimsAt(now)
		c["jti"] = fmt.Sprintf("jti-%d", i)
		toks[i] = k.token(b, c)
	}
	return toks
}

// BenchmarkCheckUncached measures Check on tokens it has not seen (the
// cache on, full, and never hit), per algorithm; BenchmarkRawVerify is the
// signature verification alone on the same tokens with crypto/ecdsa,
// crypto/rsa and crypto/ed25519. The difference is what Check adds to the
// cryptography. Figures: docs/benchmarks.md.
func BenchmarkCheckUncached(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			k := newTestKey(b, alg, "bench")
			cfg := baseConfig(b, k)
			cfg.Cache.Size = uncachedCacheSize
			h := newHarness(b, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
			toks := uncachedTokens(b, k, h.clock.Now())
			reqs := make([]*authv3.CheckRequest, len(toks))
			for i, tok := range toks {
				reqs[i] = bearerReq(tok)
			}
			ctx := b.Context()
			for _, req := range reqs { // fills the cache; checks each is allowed
				if resp, err := h.srv.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("check: %v %v", resp, err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := benchkit.StartCPU()
			i := 0
			for b.Loop() {
				h.srv.Check(ctx, reqs[i%len(reqs)])
				i++
			}
			cpu.Report(b)
		})
	}
}

func BenchmarkRawVerify(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			k := newTestKey(b, alg, "bench")
			pub := k.priv.(crypto.Signer).Public()
			toks := uncachedTokens(b, k, time.Unix(1700000000, 0))
			type signed struct{ input, sig []byte }
			in := make([]signed, len(toks))
			for i, tok := range toks {
				j := strings.LastIndexByte(tok, '.')
				sig, err := base64.RawURLEncoding.DecodeString(tok[j+1:])
				if err != nil {
					b.Fatal(err)
				}
				in[i] = signed{[]byte(tok[:j]), sig}
			}
			verify := func(s signed) bool { return benchkit.RawVerify(pub, s.input, s.sig) }
			for _, s := range in {
				if !verify(s) {
					b.Fatal("raw verify failed")
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := benchkit.StartCPU()
			i := 0
			for b.Loop() {
				verify(in[i%len(in)])
				i++
			}
			cpu.Report(b)
		})
	}
}
