package dpop_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/dpop"
	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/fakeclock"
)

func TestVerifyEachAlgorithm(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	for _, alg := range []string{"ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			clock := fakeclock.New()
			v := newVerifier(t, clock, nil)
			k := ks[alg]
			p, err := v.Verify(k.Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()), dpoptest.WithJTI("the-jti"), dpoptest.WithNonce("n")), dpop.Request{Method: testMethod, URL: testURL, JKT: k.JKT()})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p.JKT != k.JKT() || p.JTI != "the-jti" || !p.IssuedAt.Equal(clock.Now()) || p.Nonce != "n" || p.NonceStale {
				t.Fatalf("Proof = %+v", p)
			}
		})
	}
}

func TestVerifyAllowlist(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	clock := fakeclock.New()
	v := newVerifier(t, clock, func(o *dpop.Options) { o.Algorithms = []string{"ES256"} })
	if got := strings.Join(v.Algorithms(), ","); got != "ES256" {
		t.Fatalf("Algorithms() = %s", got)
	}
	_, err := v.Verify(ks["EdDSA"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now())), dpop.Request{Method: testMethod, URL: testURL})
	checkErr(t, err, dpop.CodeInvalidProof, "alg is not allowed")
	_, err = v.Verify(ks["ES256"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now())), dpop.Request{Method: testMethod, URL: testURL})
	checkErr(t, err, "", "")
}

func TestNewVerifierOptions(t *testing.T) {
	t.Parallel()
	v, err := dpop.NewVerifier(dpop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(v.Algorithms(), ","), strings.Join(dpop.DefaultAlgorithms, ","); got != want {
		t.Fatalf("default Algorithms() = %s, want %s", got, want)
	}
	for _, tc := range []struct {
		o    dpop.Options
		want []string
	}{
		{dpop.Options{Algorithms: []string{"ES256", "HS256"}}, []string{`"HS256" is not one of`}},
		{dpop.Options{Algorithms: []string{"none"}}, []string{`"none" is not one of`}},
		{dpop.Options{Algorithms: []string{"es256", "ES256K"}, MaxAge: -1, MaxSkew: -1, MaxBytes: -1}, []string{`"es256"`, `"ES256K"`, "max_age", "max_skew", "max_bytes"}},
	} {
		_, err := dpop.NewVerifier(tc.o)
		if err == nil {
			t.Fatalf("NewVerifier(%+v) = nil error", tc.o)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewVerifier(%+v) = %q, want it to name %q", tc.o, err, w)
			}
		}
	}
}

func TestVerifyReplay(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	clock := fakeclock.New()
	v := newVerifier(t, clock, nil)
	req := dpop.Request{Method: testMethod, URL: testURL}
	proof := ks["ES256"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()), dpoptest.WithJTI("once"))
	if _, err := v.Verify(proof, req); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	_, err := v.Verify(proof, req)
	checkErr(t, err, dpop.CodeInvalidProof, "already used")
	// A new proof with the same jti by the same key is a replay too.
	_, err = v.Verify(ks["ES256"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()), dpoptest.WithJTI("once")), req)
	checkErr(t, err, dpop.CodeInvalidProof, "already used")
	// The same jti under another key is another proof.
	if _, err := v.Verify(ks["ES256-other"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()), dpoptest.WithJTI("once")), req); err != nil {
		t.Fatalf("same jti, other key: %v", err)
	}
	// Once the window has passed the replay is refused as stale.
	clock.Advance(61 * time.Second)
	_, err = v.Verify(proof, req)
	checkErr(t, err, dpop.CodeInvalidProof, "stale")
}

// TestVerifyReplayConcurrent: one proof sent to many requests at once
// (a replay racing the original) is accepted exactly once.
func TestVerifyReplayConcurrent(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	clock := fakeclock.New()
	v := newVerifier(t, clock, nil)
	req := dpop.Request{Method: testMethod, URL: testURL}
	proof := ks["ES256"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()))
	const n = 16
	var accepted atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := v.Verify(proof, req); err == nil {
				accepted.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if got := accepted.Load(); got != 1 {
		t.Fatalf("%d of %d concurrent verifications of one proof accepted, want 1", got, n)
	}
}

// TestVerifyRefusedNotRecorded: a proof refused for any reason is not
// recorded, so it cannot fill the replay cache or block its own retry.
func TestVerifyRefusedNotRecorded(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	clock := fakeclock.New()
	cache := dpop.NewReplayCache(0)
	v := newVerifier(t, clock, func(o *dpop.Options) { o.Replay = cache })
	proof := ks["ES256"].Proof(testMethod, testURL, dpoptest.WithIAT(clock.Now()), dpoptest.WithATH(testToken))
	_, err := v.Verify(proof, dpop.Request{Method: testMethod, URL: testURL, AccessToken: "other"})
	checkErr(t, err, dpop.CodeInvalidProof, "ath does not match")
	if n, _, _ := cache.Stats(); n != 0 {
		t.Fatalf("refused proof recorded: %d entries", n)
	}
	if _, err := v.Verify(proof, dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if n, b, _ := cache.Stats(); n != 1 || b <= 0 {
		t.Fatalf("Stats = %d entries, %d bytes; want 1 entry", n, b)
	}
}

func TestVerifyNonceFlow(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	k := ks["ES256"]
	clock := fakeclock.New()
	nonces, err := dpop.NewNonces([]byte("shared secret of the replicas"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, clock, func(o *dpop.Options) { o.Nonces = nonces; o.MaxAge = 10 * time.Minute })
	req := dpop.Request{Method: testMethod, URL: testURL}
	proof := func(opts ...dpoptest.Opt) string {
		return k.Proof(testMethod, testURL, append([]dpoptest.Opt{dpoptest.WithIAT(clock.Now())}, opts...)...)
	}

	// No nonce: use_dpop_nonce, and the proof is not recorded (the client
	// retries with a new proof, but must be able to).
	_, err = v.Verify(proof(dpoptest.WithJTI("first")), req)
	checkErr(t, err, dpop.CodeUseNonce, "nonce is required")
	_, err = v.Verify(proof(dpoptest.WithNonce("")), req)
	checkErr(t, err, dpop.CodeUseNonce, "nonce is required")

	// An issued nonce is accepted, fresh.
	n := nonces.Issue(clock.Now())
	p, err := v.Verify(proof(dpoptest.WithJTI("first"), dpoptest.WithNonce(n)), req)
	if err != nil {
		t.Fatalf("issued nonce: %v", err)
	}
	if p.Nonce != n || p.NonceStale {
		t.Fatalf("Proof = %+v, want nonce %q, not stale", p, n)
	}

	// Past half its lifetime: accepted, stale.
	clock.Advance(31 * time.Second)
	p, err = v.Verify(proof(dpoptest.WithNonce(n)), req)
	if err != nil || !p.NonceStale {
		t.Fatalf("half-life nonce: %+v, %v; want accepted and stale", p, err)
	}

	// Past its lifetime: refused.
	clock.Advance(30 * time.Second)
	_, err = v.Verify(proof(dpoptest.WithNonce(n)), req)
	checkErr(t, err, dpop.CodeUseNonce, "nonce expired")

	// Issued by another secret, or in the future, or garbage: refused.
	other, err := dpop.NewNonces(nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(proof(dpoptest.WithNonce(other.Issue(clock.Now()))), req)
	checkErr(t, err, dpop.CodeUseNonce, "nonce is not valid")
	_, err = v.Verify(proof(dpoptest.WithNonce(nonces.Issue(clock.Now().Add(6*time.Second)))), req)
	checkErr(t, err, dpop.CodeUseNonce, "nonce expired")
	if _, err := v.Verify(proof(dpoptest.WithNonce(nonces.Issue(clock.Now().Add(5*time.Second)))), req); err != nil {
		t.Fatalf("nonce 5 s ahead (replica clock skew): %v", err)
	}
	fresh := nonces.Issue(clock.Now())
	for _, bad := range []string{"x", fresh + "A", fresh[:len(fresh)-1] + "=", strings.ToUpper(fresh)} {
		_, err = v.Verify(proof(dpoptest.WithNonce(bad)), req)
		checkErr(t, err, dpop.CodeUseNonce, "nonce is not valid")
	}

	// A bad proof with a good nonce is invalid_dpop_proof, not a nonce
	// problem.
	_, err = v.Verify(proof(dpoptest.WithNonce(fresh), dpoptest.WithATH("x")), dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken})
	checkErr(t, err, dpop.CodeInvalidProof, "ath does not match")

	// Replicas sharing the secret accept each other's nonces.
	replica, err := dpop.NewNonces([]byte("shared secret of the replicas"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(proof(dpoptest.WithNonce(replica.Issue(clock.Now()))), req); err != nil {
		t.Fatalf("nonce of a replica: %v", err)
	}
}

func TestNoncesDefaults(t *testing.T) {
	t.Parallel()
	a, err := dpop.NewNonces(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dpop.NewNonces(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Lifetime() != 5*time.Minute {
		t.Fatalf("default lifetime %v", a.Lifetime())
	}
	now := fakeclock.Start
	n := a.Issue(now)
	if len(n) != 32 {
		t.Fatalf("nonce %q has %d characters, want 32", n, len(n))
	}
	if _, err := a.Check(n, now.Add(5*time.Minute)); err != nil {
		t.Fatalf("nonce at its lifetime: %v", err)
	}
	if _, err := b.Check(n, now); err == nil {
		t.Fatal("random secrets of two sources accept each other's nonces")
	}
}

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"https://example.com/a", "https://example.com/a"},
		{"HTTPS://EXAMPLE.com/A", "https://example.com/A"},
		{"https://example.com", "https://example.com/"},
		{"https://example.com:443/a", "https://example.com/a"},
		{"http://example.com:80/a", "http://example.com/a"},
		{"http://example.com:443/a", "http://example.com:443/a"},
		{"https://example.com:/a", "https://example.com/a"},
		{"https://example.com:08443/a", "https://example.com:8443/a"},
		{"https://example.com/a?b=c#d", "https://example.com/a"},
		{"https://example.com?b", "https://example.com/"},
		{"https://example.com/%7e%41%2f%2F%3a", "https://example.com/~A%2F%2F%3A"},
		{"https://example.com/a b/é", "https://example.com/a%20b/%C3%A9"},
		{"https://example.com/a/./b/../c", "https://example.com/a/c"},
		{"https://example.com/a/%2E%2E/c", "https://example.com/c"},
		{"https://example.com/..", "https://example.com/"},
		{"https://[::1]:8443/a", "https://[::1]:8443/a"},
		{"https://[::1]:443/a", "https://[::1]/a"},
		{"https://[2001:DB8::1]/", "https://[2001:db8::1]/"},
		{"https://example.com/a;b=c,d", "https://example.com/a;b=c,d"},
	} {
		got, err := dpop.NormalizeURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"", "/a", "example.com/a", "ftp://example.com/", "https://", "https:///a", "https://user@example.com/",
		"https://example.com:99999/", "https://example.com:8x/", "https://example.com/%zz", "https://example.com/%4",
		"https://[::1/", "https://[zz]/", "https://exa mple.com/", "https://example.com:+80/", "https://a:b:c/",
	} {
		if got, err := dpop.NormalizeURL(bad); err == nil {
			t.Errorf("NormalizeURL(%q) = %q, want an error", bad, got)
		}
	}
}

func TestAccessTokenHash(t *testing.T) {
	t.Parallel()
	// SHA-256("abc"), base64url without padding.
	if got, want := dpop.AccessTokenHash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"; got != want {
		t.Fatalf("AccessTokenHash = %s, want %s", got, want)
	}
}
