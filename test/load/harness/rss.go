package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// runRSS sends a server --tokens Checks, each with a distinct, freshly
// signed ES256 token (so every one is a cache miss that verifies and
// inserts, evicting once the cache is full), and prints the server's
// resident set size (VmRSS of /proc/PID/status) every --every tokens as a
// Markdown table. A bounded cache shows as a flat RSS once it is full.
func runRSS(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rss", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory prep wrote into (required): the signing key")
	addr := fs.String("addr", "", "host:port of the server's gRPC listener (required)")
	pid := fs.Int("pid", 0, "the server's process ID, whose RSS is read (required)")
	tokens := fs.Int("tokens", 1_000_000, "distinct tokens to send")
	every := fs.Int("every", 100_000, "read the RSS every this many tokens")
	workers := fs.Int("concurrency", 8, "concurrent signers and callers")
	issuer := fs.String("issuer", "https://issuer.load.test", "iss of the tokens")
	audience := fs.String("audience", "load-api", "aud of the tokens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *addr == "" || *pid <= 0 || *tokens < 1 || *every < 1 || *workers < 1 {
		return fmt.Errorf("rss: --dir, --addr and --pid are required; --tokens, --every and --concurrency must be ≥ 1")
	}
	key, alg, err := readSigningKey(*dir)
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	if alg.String() != "ES256" {
		return fmt.Errorf("rss: the signing key is %s; rss signs ES256 (prep --alg ES256)", alg)
	}
	signer, err := fastSignerFor(key, *issuer, *audience)
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	type point struct {
		tokens int
		rss    int64 // KiB
		at     time.Duration
	}
	start := time.Now()
	rss0, err := readRSS(*pid)
	if err != nil {
		return fmt.Errorf("rss: %w", err)
	}
	points := []point{{0, rss0, 0}}
	var sent atomic.Int64
	var denied atomic.Int64
	var failed atomic.Value
	// Checks go in batches of --every: all workers finish a batch before the
	// RSS is read, so each reading follows exactly that many tokens.
	for done := 0; done < *tokens; {
		batch := min(*every, *tokens-done)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range *workers {
			wg.Go(func() {
				for next.Add(1) <= int64(batch) {
					if failed.Load() != nil {
						return
					}
					tok, err := signer.sign()
					if err != nil {
						failed.Store(err)
						return
					}
					resp, err := client.Check(ctx, checkRequest(tok))
					if err != nil {
						failed.Store(err)
						return
					}
					if expectAllow(resp, false) != nil {
						denied.Add(1)
					}
					sent.Add(1)
				}
			})
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			return fmt.Errorf("rss: after %d checks: %w", sent.Load(), err)
		}
		done += batch
		r, err := readRSS(*pid)
		if err != nil {
			return fmt.Errorf("rss: %w", err)
		}
		points = append(points, point{done, r, time.Since(start)})
		fmt.Fprintf(os.Stderr, "rss: %d tokens, RSS %d KiB\n", done, r)
	}
	if n := denied.Load(); n > 0 {
		return fmt.Errorf("rss: %d of %d checks were not allowed: the figures would not be of the verified path", n, sent.Load())
	}

	var b strings.Builder
	fmt.Fprintf(&b, "#### RSS across %d distinct tokens (each checked once, ES256)\n\n", *tokens)
	b.WriteString("| tokens checked | RSS | change since the previous reading | elapsed |\n| ---: | ---: | ---: | ---: |\n")
	for i, p := range points {
		change := "—"
		if i > 0 {
			change = fmt.Sprintf("%+.1f MiB", float64(p.rss-points[i-1].rss)/1024)
		}
		fmt.Fprintf(&b, "| %d | %.1f MiB | %s | %s |\n", p.tokens, float64(p.rss)/1024, change, p.at.Round(time.Second))
	}
	// Flat: compare the second half of the run with the reading at its middle.
	mid := points[len(points)/2]
	last := points[len(points)-1]
	peak := mid.rss
	for _, p := range points[len(points)/2:] {
		peak = max(peak, p.rss)
	}
	fmt.Fprintf(&b, "\nRSS at %d tokens %.1f MiB, at %d tokens %.1f MiB (peak in between %.1f MiB): %+.1f MiB over the second half of the run.\n\n",
		mid.tokens, float64(mid.rss)/1024, last.tokens, float64(last.rss)/1024, float64(peak)/1024, float64(last.rss-mid.rss)/1024)
	_, err = io.WriteString(stdout, b.String())
	return err
}

// readRSS returns VmRSS of a process in KiB.
func readRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// fastSigner signs ES256 access tokens of the prep token's shape directly
// with crypto/ecdsa (a million tokens through jwx would take several times
// longer); each has a random jti and sid.
type fastSigner struct {
	key    *ecdsa.PrivateKey
	header string // base64url, with the dot
	claims map[string]any
}

// fastSignerFor is a fastSigner with prep's ES256 key, tokens valid two hours.
func fastSignerFor(key jwk.Key, issuer, audience string) (*fastSigner, error) {
	var priv ecdsa.PrivateKey
	if err := jwk.Export(key, &priv); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	kid, _ := key.KeyID()
	return newFastSigner(&priv, kid, issuer, audience, time.Now(), 2*time.Hour), nil
}

func newFastSigner(key *ecdsa.PrivateKey, kid, issuer, audience string, now time.Time, ttl time.Duration) *fastSigner {
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": "at+jwt"})
	return &fastSigner{key: key, header: base64.RawURLEncoding.EncodeToString(h) + ".", claims: map[string]any{
		"iss": issuer, "sub": loadSubject, "aud": []string{audience}, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(ttl).Unix(), "name": loadName, "roles": loadRoles, "scope": "orders:read orders:write",
	}}
}

func (s *fastSigner) sign() (string, error) {
	c := make(map[string]any, len(s.claims)+2)
	for k, v := range s.claims {
		c[k] = v
	}
	c["jti"], c["sid"] = randomID(), randomID()
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	input := s.header + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
