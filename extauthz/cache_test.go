package extauthz

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// The verified-token cache: hits, misses and expiry.
func TestCacheHitsAndExpiry(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k))
	now := h.clock.Now()
	c := claimsAt(now)
	c["exp"] = now.Add(2 * time.Minute).Unix()
	tok := k.token(t, c)
	for range 3 {
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatalf("check: %s", got)
		}
	}
	if hits, misses := counterValue(t, h.srv.metrics.cacheHits), counterValue(t, h.srv.metrics.cacheMisses); hits != 2 || misses != 1 {
		t.Fatalf("hits %v misses %v, want 2 and 1", hits, misses)
	}
	// x-token-expires-in counts down on hits too.
	h.clock.Advance(90 * time.Second)
	if got := h.check(t, bearerReq(tok)).response["x-token-expires-in"]; got != "30" {
		t.Fatalf("x-token-expires-in on a hit = %s, want 30", got)
	}
	// At exp the entry is gone: the token is verified again (still within leeway).
	h.clock.Advance(30 * time.Second)
	if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
		t.Fatalf("within leeway: %s", got)
	}
	if misses := counterValue(t, h.srv.metrics.cacheMisses); misses != 2 {
		t.Fatalf("misses %v, want 2: an entry must not outlive exp", misses)
	}
	h.clock.Advance(31 * time.Second)
	if got := h.check(t, bearerReq(tok)).reason(); got != "token_expired" {
		t.Fatalf("after exp + leeway: %s", got)
	}
}

// The cache is bounded: the least recently used entry goes.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.Size = 2
	h := newHarness(t, cfg)
	var toks []string
	for i := range 3 {
		c := claimsAt(h.clock.Now())
		c["jti"] = string(rune('a' + i))
		toks = append(toks, k.token(t, c))
		h.check(t, bearerReq(toks[i]))
	}
	if n := h.srv.state.Load().cache.len(); n != 2 {
		t.Fatalf("cache holds %d, want 2", n)
	}
	if h.srv.state.Load().cache.contains(toks[0]) {
		t.Fatal("the oldest entry was kept")
	}
}

func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.Disabled = true
	h := newHarness(t, cfg)
	tok := k.token(t, claimsAt(h.clock.Now()))
	for range 2 {
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatal(got)
		}
	}
	if hits := counterValue(t, h.srv.metrics.cacheHits); hits != 0 {
		t.Fatalf("hits %v with the cache disabled", hits)
	}
}

// A cache hit answers with the entry's ready-made response. It must be the
// answer a fresh render gives (here: a server with the cache off, same
// clock) in every variant — Authorization stripped or not, an allowed
// Origin or not — over gRPC and HTTP, before and after
// x-token-expires-in changes; and an answer already returned is never
// modified when the next second's is built.
func TestReadyAllowMatchesFreshRender(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cases := []struct {
		name       string
		removeAuth bool
		viaCookie  bool
		origin     string
	}{
		{name: "plain"},
		{name: "remove authorization", removeAuth: true},
		{name: "remove authorization, token in a cookie", removeAuth: true, viaCookie: true},
		{name: "allowed origin", origin: "https://app.test"},
		{name: "other origin", origin: "https://evil.test"},
		{name: "remove authorization and allowed origin", removeAuth: true, origin: "https://app.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			servers := make([]*harness, 2) // cached, uncached
			webs := make([]string, 2)
			for i := range servers {
				cfg := baseConfig(t, k)
				cfg.Cache.Disabled = i == 1
				cfg.Token.RemoveAuthorizationHeader = tc.removeAuth
				cfg.Token.Cookie = "at"
				cfg.CORS.AllowedOrigins = []string{"https://app.test"}
				servers[i] = newHarness(t, cfg)
				web := httptest.NewServer(servers[i].srv.Routes())
				t.Cleanup(web.Close)
				webs[i] = web.URL
			}
			tok := k.token(t, claimsAt(servers[0].clock.Now()))
			headers := map[string]string{"authorization": "Bearer " + tok}
			if tc.viaCookie {
				headers = map[string]string{"cookie": "at=" + tok}
			}
			if tc.origin != "" {
				headers["origin"] = tc.origin
			}
			req := checkReq("GET", "app.test", "/api/things", headers)

			var kept, keptCopy *authv3.CheckResponse
			for step, advance := range []time.Duration{0, 0, 400 * time.Millisecond, 700 * time.Millisecond, 0, 3 * time.Second} {
				for _, h := range servers {
					h.clock.Advance(advance)
				}
				got, err := servers[0].srv.Check(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				want, err := servers[1].srv.Check(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
					t.Fatalf("step %d: cached gRPC answer differs from a fresh one (-fresh +cached):\n%s", step, diff)
				}
				a := flatten(t, got)
				if !a.allowed {
					t.Fatalf("step %d: not allowed: %+v", step, a)
				}
				for _, name := range a.removed {
					if _, ok := a.set[name]; ok {
						t.Fatalf("step %d: %s both set and removed", step, name)
					}
				}
				if kept == nil && step > 0 {
					kept, keptCopy = got, proto.Clone(got).(*authv3.CheckResponse)
				}

				gotHTTP, wantHTTP := forwardAuthHeaders(t, webs[0], headers), forwardAuthHeaders(t, webs[1], headers)
				if diff := cmp.Diff(wantHTTP, gotHTTP); diff != "" {
					t.Fatalf("step %d: cached HTTP answer differs from a fresh one (-fresh +cached):\n%s", step, diff)
				}
			}
			if hits := counterValue(t, servers[0].srv.metrics.cacheHits); hits != 11 {
				t.Fatalf("cache hits %v, want 11 (every check but the first)", hits)
			}
			if !proto.Equal(kept, keptCopy) {
				t.Fatal("a response already returned was modified by a later check")
			}
			if got := flatten(t, kept).response["x-token-expires-in"]; got != "900" {
				t.Fatalf("kept x-token-expires-in %s, want 900", got)
			}
		})
	}
}

// forwardAuthHeaders sends one forward-auth request and returns the
// answer's status and headers, without the ones net/http adds.
func forwardAuthHeaders(t *testing.T, base string, headers map[string]string) http.Header {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/authz/api/things", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	h := resp.Header.Clone()
	h.Del("Date")
	h.Del("Content-Length")
	h.Set("Status", strconv.Itoa(resp.StatusCode))
	return h
}

// A cached allow, ready-made answer and all, is still refused once its
// session is revoked: the revocation check runs on every hit.
func TestReadyAllowRevoked(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	dl := &fakeDenylist{revoked: map[string]bool{}, ready: true}
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.Denylist = dl })
	web := httptest.NewServer(h.srv.Routes())
	t.Cleanup(web.Close)
	tok := k.token(t, claimsAt(h.clock.Now()))
	headers := map[string]string{"authorization": "Bearer " + tok}
	for range 2 { // a miss, then a hit that stores the ready-made answers
		if got := h.check(t, bearerReq(tok)).reason(); got != "allow" {
			t.Fatalf("before revocation: %s", got)
		}
		if got := forwardAuthHeaders(t, web.URL, headers).Get("Status"); got != "200" {
			t.Fatalf("before revocation: HTTP %s", got)
		}
	}
	dl.revoke("sess-1")
	if got := h.check(t, bearerReq(tok)).reason(); got != "token_revoked" {
		t.Fatalf("after revocation: %s", got)
	}
	if got := forwardAuthHeaders(t, web.URL, headers).Get("Status"); got != "401" {
		t.Fatalf("after revocation: HTTP %s", got)
	}
	if hits := counterValue(t, h.srv.metrics.cacheHits); hits != 5 {
		t.Fatalf("cache hits %v, want 5: the revoked checks must be hits", hits)
	}
}

// bigToken is a valid token of about 5.5 KB (a 5,000-byte claim), the size
// that made an entry-count bound hold ~314 MB at 10,000 entries.
func bigToken(t testing.TB, k *testKey, now time.Time, i int) string {
	t.Helper()
	c := claimsAt(now)
	c["jti"] = "jti-" + strconv.Itoa(i)
	c["groups"] = strings.Repeat("g", 5000)
	return k.token(t, c)
}

// The cache is bounded in bytes as well as in entries;
// the least recently used entries go first, and the byte count returns to
// zero when everything is gone.
func TestCacheBoundedInBytes(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.Size = 1000
	cfg.Cache.MaxBytes = 64 << 10
	h := newHarness(t, cfg)
	var toks []string
	for i := range 100 {
		toks = append(toks, bigToken(t, k, h.clock.Now(), i))
		if got := h.check(t, bearerReq(toks[i])).reason(); got != "allow" {
			t.Fatalf("token %d: %s", i, got)
		}
	}
	c := h.srv.state.Load().cache
	// Each entry holds at least the 5.5 KB token and its 5 KB claim.
	if n := c.len(); n == 0 || n > int(cfg.Cache.MaxBytes)/(10<<10) {
		t.Fatalf("the cache holds %d entries of ≥ 10 KiB in %d bytes", n, cfg.Cache.MaxBytes)
	}
	if b := c.bytes(); b > cfg.Cache.MaxBytes || b <= 0 {
		t.Fatalf("the cache accounts %d bytes, bound %d", b, cfg.Cache.MaxBytes)
	}
	if !c.contains(canonical(t, toks[99])) || c.contains(canonical(t, toks[0])) {
		t.Fatal("not least-recently-used: the newest is gone or the oldest kept")
	}
	// A token bigger than the whole cache is verified but never cached.
	tiny := cfg
	tiny.Cache.MaxBytes = 1 << 10
	ht := newHarness(t, tiny)
	if got := ht.check(t, bearerReq(toks[0])).reason(); got != "allow" {
		t.Fatal(got)
	}
	if n, b := ht.srv.state.Load().cache.len(), ht.srv.state.Load().cache.bytes(); n != 0 || b != 0 {
		t.Fatalf("an entry over max_bytes was cached: %d entries, %d bytes", n, b)
	}
	// Expired entries leave the count when they are found expired.
	h.clock.Advance(time.Hour)
	for _, tok := range toks {
		h.check(t, bearerReq(tok))
	}
	if n, b := c.len(), c.bytes(); n != 0 || b != 0 {
		t.Fatalf("after expiry: %d entries, %d bytes", n, b)
	}
}

// canonical is the spelling a token is cached under.
func canonical(t testing.TB, tok string) string {
	t.Helper()
	ct, d := splitToken(tok)
	if d != nil {
		t.Fatal(d)
	}
	return ct.canonical
}

// The new limits are validated with their paths.
func TestValidateLimits(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.Cache.MaxBytes = -1
	cfg.Logs.DenialsPerSecond = -1
	cfg.Providers[0].AllowedRoles = []string{"user", ""}
	err := cfg.Validate()
	for _, want := range []string{"cache.max_bytes: must be positive", "logs.denials_per_second: must be positive", "providers[0].allowed_roles[1]: must not be empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}
