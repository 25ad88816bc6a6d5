package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/protobuf/encoding/protojson"
)

// tokens writes ghz arrays of CheckRequests whose tokens all differ (across
// files too) and verify with the run's JWKS; rss's fast signer makes tokens
// that verify as well.
func TestTokensAreDistinctAndValid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	if err := run(ctx, []string{"prep", "--dir", dir, "--issuer", "https://iss.test", "--audience", "api"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"tokens", "--dir", dir, "--issuer", "https://iss.test", "--audience", "api",
		"--files", "2", "--per-file", "5"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	set, err := jwk.ReadFile(filepath.Join(dir, fileJWKS))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	check := func(tok string) {
		t.Helper()
		if seen[tok] {
			t.Errorf("token repeated")
		}
		seen[tok] = true
		parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithIssuer("https://iss.test"), jwt.WithAudience("api"))
		if err != nil {
			t.Fatalf("token does not verify: %v", err)
		}
		if sub, _ := parsed.Subject(); sub != loadSubject {
			t.Errorf("sub %q", sub)
		}
	}
	for f := 1; f <= 2; f++ {
		raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("uncached-%d.json", f)))
		if err != nil {
			t.Fatal(err)
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			t.Fatalf("file %d is not a JSON array: %v", f, err)
		}
		if len(elems) != 5 {
			t.Fatalf("file %d has %d requests, want 5", f, len(elems))
		}
		for _, e := range elems {
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(e, &req); err != nil {
				t.Fatalf("not a CheckRequest: %v", err)
			}
			auth := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]
			tok, ok := strings.CutPrefix(auth, "Bearer ")
			if !ok {
				t.Fatalf("authorization %q", auth)
			}
			check(tok)
		}
	}
	if len(seen) != 10 {
		t.Errorf("%d distinct tokens, want 10", len(seen))
	}

	key, alg, err := readSigningKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if alg.String() != "ES256" {
		t.Fatalf("alg %s", alg)
	}
	signer, err := fastSignerFor(key, "https://iss.test", "api")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tok, err := signer.sign()
		if err != nil {
			t.Fatal(err)
		}
		check(tok)
	}
}

// The report leads with a summary of the run's ratios and adds the store
// benchmarks' ratios (per round, then the median).
func TestReportSummaryAndStores(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, kind := range []string{"uncached", "http"} {
		for r := 1; r <= 3; r++ {
			if kind == "uncached" {
				writeGHZ(t, filepath.Join(dir, fmt.Sprintf("uncached-r%d-noop.json", r)), 1000, 3000, time.Millisecond, 5*time.Millisecond, 0)
				writeGHZ(t, filepath.Join(dir, fmt.Sprintf("uncached-r%d-tokengate.json", r)), 1000, float64(1500+100*r), 2*time.Millisecond, 9*time.Millisecond, 0)
				continue
			}
			writeFile(t, filepath.Join(dir, fmt.Sprintf("http-r%d-noop.json", r)), `{"requests":20000,"duration_us":2000000,"p50_us":1000,"p99_us":4000,"non2xx":0,"socket_errors":0}`)
			writeFile(t, filepath.Join(dir, fmt.Sprintf("http-r%d-tokengate.json", r)), `{"requests":18000,"duration_us":2000000,"p50_us":1200,"p99_us":5000,"non2xx":0,"socket_errors":0}`)
		}
	}
	var bolt, redis strings.Builder
	for r, solo := range []float64{500000, 600000, 400000} {
		fmt.Fprintf(&bolt, "goos: linux\nBenchmarkBoltRotateConcurrent/sessions=64/solo-2   \t    2000\t    %.0f ns/op\nBenchmarkBoltRotateConcurrent/sessions=64/group-2  \t   20000\t     %d ns/op\nPASS\n", solo, 100000)
		fmt.Fprintf(&redis, "BenchmarkRedis/baseline-serial-2 \t 5000\t 100000 ns/op\nBenchmarkRedis/rotate-serial-2 \t 2000\t %d ns/op\t 12 B/op\n", 200000+10000*r)
	}
	writeFile(t, filepath.Join(dir, "bench-bolt.txt"), bolt.String())
	writeFile(t, filepath.Join(dir, "bench-redis.txt"), redis.String())

	var out bytes.Buffer
	if err := run(context.Background(), []string{"report", "--dir", dir}, &out); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	got := out.String()
	if !strings.HasPrefix(got, "#### Summary") {
		t.Errorf("report does not start with the summary:\n%s", got)
	}
	for _, want := range []string{
		"| uncached Check ÷ no-op gRPC server (distinct tokens) | ≥ 0.5× | **0.57×** (0.57×) |",
		"| forward-auth ÷ no-op HTTP server (cached token) | ≥ 0.85× | **0.90×** (0.90×) |",
		"group commits ÷ one transaction per rotation, 64 sessions refreshing at once | ≥ 5× | **5.00×** (5.00×) |",
		"| Redis rotation ÷ (one ES256 signature + one round trip), serial | ≤ 2× | **2.10×** (2.10×) |",
		"| 2 | 600000 | 100000 | 6.00× |",
		"Median of the per-round ratios: **2.10×** (target ≤ 2×).",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q\n%s", want, got)
		}
	}
}
