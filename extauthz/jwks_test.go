package extauthz

import (
	"context"
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
	fail         int // fail this many next requests
	hits         atomic.Int32
	fetched      chan struct{}
}

func newJWKSServer(t testing.TB, doc []byte) *jwksServer {
	s := &jwksServer{doc: doc, fetched: make(chan struct{}, 100)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		defer func() { s.fetched <- struct{}{} }()
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

// An unknown kid refetches at once, at most once per kid_refetch_interval;
// a failed fetch keeps the last good keys.
func TestJWKSURLUnknownKidRefetch(t *testing.T) {
	t.Parallel()
	k1 := newTestKey(t, "ES256", "es-1")
	k2 := newTestKey(t, "ES256", "es-2")
	k3 := newTestKey(t, "ES256", "es-3")
	js := newJWKSServer(t, jwks(t, k1))
	h := newHarness(t, urlConfig(js.URL))
	waitReady(t, h.srv)
	base := js.hits.Load()

	// The issuer rotates in k2; the first token signed by it triggers a refetch.
	js.set(jwks(t, k1, k2), 0)
	if got := h.check(t, bearerReq(k2.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("new kid after refetch: %s", got)
	}
	if got := js.hits.Load() - base; got != 1 {
		t.Fatalf("%d fetches for the unknown kid, want 1", got)
	}
	// Within the interval, more unknown kids do not fetch.
	js.set(jwks(t, k1, k2, k3), 0)
	for range 5 {
		if got := h.check(t, bearerReq(k3.token(t, claimsAt(h.clock.Now())))).reason(); got != "invalid_token" {
			t.Fatalf("rate-limited unknown kid: %s", got)
		}
	}
	if got := js.hits.Load() - base; got != 1 {
		t.Fatalf("%d fetches, want still 1 (rate limit)", got)
	}
	// After the interval it may fetch again.
	h.clock.Advance(DefaultKidRefetchInterval + time.Second)
	if got := h.check(t, bearerReq(k3.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("unknown kid after interval: %s", got)
	}
	// A failing refetch keeps the last good keys.
	h.clock.Advance(DefaultKidRefetchInterval + time.Second)
	js.set(nil, 100)
	k4 := newTestKey(t, "ES256", "es-4")
	if got := h.check(t, bearerReq(k4.token(t, claimsAt(h.clock.Now())))).reason(); got != "invalid_token" {
		t.Fatalf("unknown kid with failing server: %s", got)
	}
	if got := h.check(t, bearerReq(k1.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("known key after failed fetch: %s", got)
	}
	// A JSON answer without usable keys also keeps the old ones.
	h.clock.Advance(DefaultKidRefetchInterval + time.Second)
	js.set([]byte(`{"keys":[]}`), 0)
	h.check(t, bearerReq(k4.token(t, claimsAt(h.clock.Now()))))
	if got := h.check(t, bearerReq(k2.token(t, claimsAt(h.clock.Now())))).reason(); got != "allow" {
		t.Fatalf("after an empty JWKS: %s", got)
	}
	if got := counterValue(t, h.srv.metrics.jwksFetches.WithLabelValues("idp", "invalid")); got != 1 {
		t.Errorf("invalid count %v, want 1", got)
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
	h.check(t, bearerReq(newTestKey(t, "ES256", "es-9").token(t, claimsAt(h.clock.Now()))))
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
