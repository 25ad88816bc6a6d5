package extauthz

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/status"
)

func grpcCode(err error) string {
	if err == nil {
		return "OK"
	}
	return status.Code(err).String()
}

// newFailingJWKS is a JWKS endpoint that always answers 500.
func newFailingJWKS(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// jwksServer serves whatever document it holds, counts fetches, and can be
// told to fail.
type jwksServer struct {
	*httptest.Server
	mu           sync.Mutex
	doc          []byte
	cacheControl string
	fail         int           // fail this many next requests
	hold         chan struct{} // when set, requests hang until it is closed
	hits         atomic.Int32
	fetched      chan struct{}
}

func newJWKSServer(t testing.TB, doc []byte) *jwksServer {
	s := &jwksServer{doc: doc, fetched: make(chan struct{}, 100)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		defer func() {
			select {
			case s.fetched <- struct{}{}:
			default:
			}
		}()
		s.mu.Lock()
		hold := s.hold
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail > 0 {
			s.fail--
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if s.cacheControl != "" {
			w.Header().Set("Cache-Control", s.cacheControl)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.doc)
	}))
	t.Cleanup(s.Close)
	return s
}

// hang makes the following requests hang until release is called (a JWKS
// source that accepts connections and never answers).
func (s *jwksServer) hang() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hold := make(chan struct{})
	s.hold = hold
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hold == hold {
			s.hold = nil
		}
		close(hold)
	}
}

func (s *jwksServer) set(doc []byte, fail int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc, s.fail = doc, fail
}

func urlConfig(url string) Config {
	return Config{Providers: []Provider{{Name: "idp", Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: url}}}
}

func waitReady(t testing.TB, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// Fetched at start with retry and backoff: the first two fetches fail.
func TestJWKSURLRetriesAtStart(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	js := newJWKSServer(t, jwks(t, k))
	js.set(jwks(t, k), 2)
	h := newHarness(t, urlConfig(js.URL))
	waitReady(t, h.srv)
	if got := js.hits.Load(); got < 3 {
		t.Fatalf("ready after %d fetches, want ≥ 3 (two failures, then success)", got)
	}
	if got := h.check(t, bearerReq(k.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("after start: %s", got)
	}
	if got := counterValue(t, h.srv.metrics.jwksFetches.WithLabelValues("idp", "fetch_error")); got < 2 {
		t.Errorf("fetch_error count %v, want ≥ 2", got)
	}
	if got := counterValue(t, h.srv.metrics.jwksFetches.WithLabelValues("idp", "ok")); got < 1 {
		t.Errorf("ok count %v", got)
	}
}

// outcome is a check's result in one word: "allow", the denial's error, or
// the gRPC code of an error ("Unavailable").
func (h *harness) outcome(t testing.TB, token string) string {
	t.Helper()
	resp, err := h.srv.Check(context.Background(), bearerReq(token))
	if err != nil {
		return grpcCode(err)
	}
	return flatten(t, resp).reason()
}

// waitingConfig is urlConfig whose unknown-kid checks wait for their
// refetch (a local server answers at once), so a test sees decisions, not
// the kid_refetch_wait bound.
func waitingConfig(url string) Config {
	cfg := urlConfig(url)
	cfg.Providers[0].KidRefetchWait = Duration{10 * time.Second}
	return cfg
}

// An unknown kid refetches at once. The same kid refetches at most once per
// kid_refetch_interval, any kids at most once per kid_refetch_min_gap; a kid
// waiting for its refetch gets UNAVAILABLE, not invalid_token. A failed
// fetch keeps the last good keys.
func TestJWKSURLUnknownKidRefetch(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	k3 := newTestKey(t, "ES256", "es-3")
	k4 := newTestKey(t, "ES256", "es-4")
	k5 := newTestKey(t, "ES256", "es-5")
	js := newJWKSServer(t, jwks(t, k1))
	h := newHarness(t, waitingConfig(js.URL))
	waitReady(t, h.srv)
	base := js.hits.Load()
	fetches := func() int32 { return js.hits.Load() - base }
	tok := func(k *testKey) string { return k.token(t, claimsAt(h.clock.Now())) }

	// The issuer rotates in k2; the first token signed by it triggers a refetch.
	js.set(jwks(t, k1, k2), 0)
	if got := h.outcome(t, tok(k2)); got != "allow" {
		t.Fatalf("new kid after refetch: %s", got)
	}
	if got := fetches(); got != 1 {
		t.Fatalf("%d fetches for the unknown kid, want 1", got)
	}
	if got := counterValue(t, h.srv.metrics.unknownKID.WithLabelValues("idp", "found")); got != 1 {
		t.Fatalf("jwks_unknown_kid_total{outcome=found} = %v, want 1", got)
	}
	// Within the min gap another new kid waits for the next refetch.
	js.set(jwks(t, k1, k2, k3), 0)
	for range 3 {
		if got := h.outcome(t, tok(k3)); got != "Unavailable" {
			t.Fatalf("new kid within kid_refetch_min_gap: %s, want Unavailable", got)
		}
	}
	if got := fetches(); got != 1 {
		t.Fatalf("%d fetches, want still 1 (min gap)", got)
	}
	h.clock.Advance(DefaultKidRefetchMinGap)
	if got := h.outcome(t, tok(k3)); got != "allow" {
		t.Fatalf("new kid after the min gap: %s", got)
	}
	// A kid absent from a fetch that started after it was seen is
	// invalid_token, and refetches only after kid_refetch_interval.
	h.clock.Advance(DefaultKidRefetchMinGap)
	if got := h.outcome(t, tok(k4)); got != "invalid_token" {
		t.Fatalf("kid absent after its refetch: %s", got)
	}
	if got := fetches(); got != 3 {
		t.Fatalf("%d fetches, want 3", got)
	}
	js.set(jwks(t, k1, k2, k3, k4), 0)
	h.clock.Advance(DefaultKidRefetchInterval - time.Second)
	if got := h.outcome(t, tok(k4)); got != "invalid_token" || fetches() != 3 {
		t.Fatalf("the same kid within kid_refetch_interval: %s after %d fetches, want invalid_token without a fetch", got, fetches())
	}
	h.clock.Advance(time.Second)
	if got := h.outcome(t, tok(k4)); got != "allow" || fetches() != 4 {
		t.Fatalf("the same kid after kid_refetch_interval: %s after %d fetches, want allow after 4", got, fetches())
	}
	// A failing refetch keeps the last good keys; the kid it was for could
	// not be checked: UNAVAILABLE.
	h.clock.Advance(DefaultKidRefetchMinGap)
	js.set(nil, 100)
	if got := h.outcome(t, tok(k5)); got != "Unavailable" {
		t.Fatalf("unknown kid with a failing server: %s", got)
	}
	if got := h.outcome(t, tok(k1)); got != "allow" {
		t.Fatalf("known key after a failed fetch: %s", got)
	}
	// A JSON answer without usable keys also keeps the old ones.
	h.clock.Advance(DefaultKidRefetchMinGap)
	js.set([]byte(`{"keys":[]}`), 0)
	if got := h.outcome(t, tok(k5)); got != "Unavailable" {
		t.Fatalf("unknown kid with an empty JWKS: %s", got)
	}
	if got := h.outcome(t, tok(k2)); got != "allow" {
		t.Fatalf("after an empty JWKS: %s", got)
	}
	if got := counterValue(t, h.srv.metrics.jwksFetches.WithLabelValues("idp", "invalid")); got != 1 {
		t.Errorf("invalid count %v, want 1", got)
	}
}

// Key rollover while an attacker sends a new junk kid every 100ms: the new
// key's tokens are never invalid_token (a client would sign its user out)
// and are allowed within kid_refetch_min_gap of the key's publication —
// every fetch loads the whole set, whichever kid caused it. The JWKS is
// fetched at most once per min gap. (The old limit, one refetch per 30s
// for all kids, refused the new key for up to 29s.)
func TestJWKSKeyRolloverWithJunkKids(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	js := newJWKSServer(t, jwks(t, k1))
	h := newHarness(t, waitingConfig(js.URL))
	waitReady(t, h.srv)
	junk := func(i int) string {
		return k1.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": fmt.Sprintf("junk-%d", i), "typ": "at+jwt"}, claimsAt(h.clock.Now()))
	}
	if got := h.outcome(t, junk(0)); got != "invalid_token" {
		t.Fatalf("junk kid: %s", got)
	}
	base := js.hits.Load()
	for range 3 { // the same junk kid again: refused at once, no fetch
		if got := h.outcome(t, junk(0)); got != "invalid_token" {
			t.Fatalf("junk kid again: %s", got)
		}
	}
	if got := js.hits.Load() - base; got != 0 {
		t.Fatalf("a repeated junk kid fetched %d times", got)
	}

	js.set(jwks(t, k1, k2), 0) // the issuer publishes k2 and signs with it at once
	published := h.clock.Now()
	const step = 100 * time.Millisecond
	outcomes := map[string]int{}
	for i := 1; ; i++ {
		if got := h.outcome(t, junk(i)); got == "allow" {
			t.Fatalf("junk kid %d allowed", i)
		}
		got := h.outcome(t, k2.token(t, claimsAt(h.clock.Now())))
		outcomes[got]++
		if got == "allow" {
			break
		}
		if got != "Unavailable" {
			t.Fatalf("new key's token %v after publication: %s; want allow or Unavailable (retry), never a sign-out", h.clock.Now().Sub(published), got)
		}
		if h.clock.Now().Sub(published) > DefaultKidRefetchMinGap {
			t.Fatalf("new key's token still refused %v after publication (outcomes %v)", h.clock.Now().Sub(published), outcomes)
		}
		h.clock.Advance(step)
	}
	elapsed := h.clock.Now().Sub(published)
	if max := int32(elapsed/DefaultKidRefetchMinGap) + 1; js.hits.Load()-base > max {
		t.Errorf("%d JWKS fetches in %v of junk kids, want ≤ %d", js.hits.Load()-base, elapsed, max)
	}
	for _, outcome := range []string{"unknown", "pending"} {
		if got := counterValue(t, h.srv.metrics.unknownKID.WithLabelValues("idp", outcome)); got < 1 {
			t.Errorf("jwks_unknown_kid_total{outcome=%s} = %v, want ≥ 1", outcome, got)
		}
	}
	t.Logf("new key allowed %v after publication; its earlier checks: %v; fetches %d", elapsed, outcomes, js.hits.Load()-base)
}

// During a hanging JWKS fetch a check with an unknown kid does not wait for
// the fetch (fetch_timeout, here 1 minute): it answers UNAVAILABLE after
// kid_refetch_wait, and the fetch goes on in the background, so its keys
// are used once it completes. Known keys are not held up at all.
func TestJWKSUnknownKidDuringHangingFetch(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	js := newJWKSServer(t, jwks(t, k1))
	cfg := urlConfig(js.URL)
	cfg.Providers[0].FetchTimeout = Duration{time.Minute}
	h := newHarness(t, cfg)
	waitReady(t, h.srv)
	src := h.srv.state.Load().providers[0].keys
	release := js.hang()
	js.set(jwks(t, k1, k2), 0)
	tok2 := k2.token(t, claimsAt(h.clock.Now()))

	// A generous bound (far above kid_refetch_wait, far below the fetch
	// timeout): the check must be over before it.
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := h.srv.Check(ctx, bearerReq(tok2))
		blocked := ctx.Err()
		cancel()
		if grpcCode(err) != "Unavailable" || blocked != nil {
			t.Fatalf("check %d with an unknown kid during a hanging fetch: %v (context: %v), want Unavailable before the bound", i, err, blocked)
		}
	}
	if got := h.outcome(t, k1.token(t, claimsAt(h.clock.Now()))); got != "allow" {
		t.Fatalf("known key during the hanging fetch: %s", got)
	}
	for len(src.updated) > 0 {
		<-src.updated
	}
	release()
	select {
	case <-src.updated:
	case <-time.After(30 * time.Second):
		t.Fatal("the background fetch never completed")
	}
	if !src.keys.Load().has("es-2") {
		t.Fatal("the completed fetch did not bring the new key")
	}
	if got := h.outcome(t, tok2); got != "allow" {
		t.Fatalf("new key after the fetch completed: %s", got)
	}
}

// The background refresh is scheduled from Cache-Control max-age, clamped
// to [refresh_min_interval, refresh_max_interval].
func TestJWKSURLHonoursCacheControl(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	for _, tc := range []struct {
		name         string
		cacheControl string
		want         time.Duration
	}{
		{"max-age within bounds", "public, max-age=900", 15 * time.Minute},
		{"max-age below min", "max-age=5", 5 * time.Minute},
		{"max-age above max", "max-age=86400", time.Hour},
		{"no header uses min", "", 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := newJWKSServer(t, jwks(t, k))
			js.cacheControl = tc.cacheControl
			h := newHarness(t, urlConfig(js.URL))
			waitReady(t, h.srv)
			p := h.srv.state.Load().providers[0]
			// A synchronous refresh, so no retry still in flight resets Next under us.
			if err := p.keys.refetch(context.Background()); err != nil {
				t.Fatal(err)
			}
			res, err := p.url.ctrl.Lookup(context.Background(), js.URL)
			if err != nil {
				t.Fatal(err)
			}
			// Next is set from the wall clock inside httprc; allow a few seconds of slack.
			got := time.Until(res.Next())
			if got < tc.want-5*time.Second || got > tc.want+time.Second {
				t.Fatalf("next refresh in %v, want about %v", got, tc.want)
			}
		})
	}
}

// jwks_file: a changed file replaces the keys; an unknown kid rereads it
// at once (rate-limited), so a rotation is picked up without waiting for
// the poll. A bad file keeps the last good keys.
func TestJWKSFileReload(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "EdDSA", "ed-1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwks(t, k1), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Providers: []Provider{{Name: "file", Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: path}}}
	h := newHarness(t, cfg)
	tok1 := k1.token(t, claimsAt(h.clock.Now()))
	if got := h.check(t, bearerReq(tok1)).reason(); got != "allow" {
		t.Fatalf("initial: %s", got)
	}
	// Rotate: k2 in, k1 out.
	if err := os.WriteFile(path, jwks(t, k2), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := h.check(t, bearerReq(k2.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("rotated-in key: %s", got)
	}
	// The cached token of the key that left the set is dropped, not served.
	if got := h.check(t, bearerReq(tok1)).reason(); got != "invalid_token" {
		t.Fatalf("token of the removed key: %s", got)
	}
	// A broken file keeps the keys.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	if got := h.outcome(t, newTestKey(t, "ES256", "es-9").token(t, claimsAt(h.clock.Now()))); got != "Unavailable" {
		t.Fatalf("unknown kid with a broken file: %s, want Unavailable (the reread failed)", got)
	}
	if got := h.check(t, bearerReq(k2.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("after a broken file: %s", got)
	}
}

func TestParseKeySetSkipsUnusableKeys(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	doc := []byte(strings.Replace(string(jwks(t, k)), `{"keys":[`, `{"keys":[{"kty":"oct","kid":"sym","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},`, 1))
	ks, notes, err := parseKeySet(doc)
	if err != nil {
		t.Fatalf("parse: %v (doc %s)", err, doc)
	}
	if len(ks.all) != 1 || ks.all[0].kid != "es-1" {
		t.Fatalf("keys %+v", ks.all)
	}
	if len(notes) != 1 {
		t.Fatalf("notes %v, want one for the oct key", notes)
	}
	if _, _, err := parseKeySet([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)); err == nil {
		t.Fatal("a set of only symmetric keys was accepted")
	}
}

// counterValue reads a counter or gauge.
func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// The jwks_file poller picks up a changed file on its own (no unknown kid
// needed): the test waits for the key-set update event.
func TestJWKSFilePoll(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwks(t, k1), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Providers: []Provider{{Name: "file", Issuer: testIssuer, Audiences: []string{testAudience}, JWKSFile: path, FilePollInterval: Duration{10 * time.Millisecond}}}}
	h := newHarness(t, cfg)
	src := h.srv.state.Load().providers[0].keys
	<-src.updated // the initial load
	// Replace atomically, as Kubernetes does with a ConfigMap update.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, jwks(t, k1, k2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.updated:
	case <-time.After(30 * time.Second):
		t.Fatal("the poller never loaded the changed file")
	}
	if !src.keys.Load().has("es-2") {
		t.Fatal("the reloaded set lacks the new key")
	}
	if got := counterValue(t, h.srv.metrics.jwksKeys.WithLabelValues("file")); got != 2 {
		t.Fatalf("jwks_keys %v, want 2", got)
	}
}

// The unknown kids a provider remembers are bounded (maxTrackedKIDs kids of
// at most 256 bytes: 256 KiB), the oldest forgotten first, however many
// junk kids arrive; a kid too long or not printable is never remembered
// (it cannot be one of ours and never triggers a refetch).
func TestJWKSUnknownKidSetBounded(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	js := newJWKSServer(t, jwks(t, k1))
	h := newHarness(t, waitingConfig(js.URL))
	waitReady(t, h.srv)
	src := h.srv.state.Load().providers[0].keys
	junk := func(kid string) string {
		return k1.tokenWithHeader(t, map[string]any{"alg": "ES256", "kid": kid, "typ": "at+jwt"}, claimsAt(h.clock.Now()))
	}
	h.outcome(t, junk("first")) // starts the one refetch of this instant
	for i := range maxTrackedKIDs + 200 {
		if got := h.outcome(t, junk(fmt.Sprintf("junk-%d-%s", i, strings.Repeat("x", 200)))); got == "allow" {
			t.Fatalf("junk kid %d allowed", i)
		}
	}
	for _, kid := range []string{strings.Repeat("y", 257), "a\x01b"} {
		if got := h.outcome(t, junk(kid)); got != "invalid_token" {
			t.Fatalf("implausible kid: %s", got)
		}
	}
	src.kids.mu.Lock()
	n, order := len(src.kids.kids), len(src.kids.order)
	_, first := src.kids.kids["first"]
	var bytes int
	for kid := range src.kids.kids {
		bytes += len(kid)
	}
	src.kids.mu.Unlock()
	if n > maxTrackedKIDs || order != n || first {
		t.Fatalf("remembered %d kids (order %d, oldest kept %v), want ≤ %d, the oldest evicted", n, order, first, maxTrackedKIDs)
	}
	if bytes > maxTrackedKIDs*256 {
		t.Fatalf("remembered kids hold %d bytes", bytes)
	}
	if got := js.hits.Load(); got > 3 {
		t.Fatalf("%d JWKS fetches for %d junk kids at one instant, want the start-up fetch and 1 refetch", got, maxTrackedKIDs+200)
	}
}

// Key removal, end to end over a real JWKS URL refreshed in the background
// (refresh_max_interval 1s; the min follows it down): at the refresh that
// removes a key, its cached tokens are dropped and new ones refused at
// once — no clock moves between the refresh and the checks — while the
// remaining key's tokens are still allowed.
func TestJWKSKeyRemovalDropsCachedTokens(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	js := newJWKSServer(t, jwks(t, k1, k2))
	cfg := urlConfig(js.URL)
	cfg.Providers[0].RefreshMaxInterval = Duration{time.Second}
	h := newHarness(t, cfg)
	waitReady(t, h.srv)
	src := h.srv.state.Load().providers[0].keys
	cached := k1.token(t, claimsAt(h.clock.Now()))
	for range 2 { // a miss, then a hit: the token is cached
		if got := h.outcome(t, cached); got != "allow" {
			t.Fatalf("before removal: %s", got)
		}
	}
	if hits := counterValue(t, h.srv.metrics.cacheHits); hits != 1 {
		t.Fatalf("cache hits %v, want 1", hits)
	}

	js.set(jwks(t, k2), 0) // the issuer removes k1
	deadline := time.After(30 * time.Second)
	for src.keys.Load().has("es-1") {
		select {
		case <-src.updated: // the background refresh loaded a set
		case <-deadline:
			t.Fatal("no background refresh removed the key")
		}
	}
	misses := counterValue(t, h.srv.metrics.cacheMisses)
	if got := h.outcome(t, cached); got != "invalid_token" {
		t.Fatalf("cached token of the removed key: %s", got)
	}
	if got := counterValue(t, h.srv.metrics.cacheMisses); got != misses+1 {
		t.Fatalf("cache misses %v → %v: the removed key's entry was served from the cache", misses, got)
	}
	if got := h.outcome(t, k1.token(t, claimsAt(h.clock.Now()))); got != "invalid_token" {
		t.Fatalf("new token of the removed key: %s", got)
	}
	if got := h.outcome(t, k2.token(t, claimsAt(h.clock.Now()))); got != "allow" {
		t.Fatalf("token of the remaining key: %s", got)
	}
}

// refresh_max_interval alone, below the default refresh_min_interval,
// brings the min down with it: the one knob for the key-removal bound.
func TestRefreshMaxIntervalAloneLowersMin(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte("providers:\n  - {issuer: https://a, audiences: [x], jwks_url: https://a/jwks, refresh_max_interval: 1m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if p := c.WithDefaults().Providers[0]; p.RefreshMinInterval.Duration != time.Minute || p.RefreshMaxInterval.Duration != time.Minute {
		t.Fatalf("min %v max %v, want 1m and 1m", p.RefreshMinInterval, p.RefreshMaxInterval)
	}
}
