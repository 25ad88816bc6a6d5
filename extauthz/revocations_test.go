package extauthz

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokengate/tokengate/internal/revocationfeed"
)

// feedServer plays the refresher's GET /v1/revocations over a real loopback
// socket (the refresher is another process; this is its wire contract).
// The cursor is the entry count. Every request's "after" is sent on
// requests, so a test knows the feed applied a response once the next
// request arrives.
type feedServer struct {
	t        *testing.T
	srv      *httptest.Server
	token    string
	requests chan string
	failing  atomic.Int32 // HTTP status to answer instead of the feed (0: serve)

	mu      sync.Mutex
	entries []revocationfeed.Entry
	changed chan struct{}
}

func newFeedServer(t *testing.T, token string) *feedServer {
	fs := &feedServer{t: t, token: token, requests: make(chan string, 1000), changed: make(chan struct{})}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *feedServer) add(sid string, until time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.entries = append(fs.entries, revocationfeed.Entry{SessionID: sid, Until: until})
	close(fs.changed)
	fs.changed = make(chan struct{})
}

func (fs *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	after := r.URL.Query().Get("after")
	fs.requests <- after
	if r.URL.Path != "/v1/revocations" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+fs.token {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"unauthorized","error_description":"admin token required"}`)
		return
	}
	pos, _ := strconv.Atoi(after)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil {
		http.Error(w, "bad wait", http.StatusBadRequest)
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if code := fs.failing.Load(); code != 0 {
			w.WriteHeader(int(code))
			fmt.Fprint(w, `{"error":"temporarily_unavailable"}`)
			return
		}
		fs.mu.Lock()
		pos = min(pos, len(fs.entries))
		out := append([]revocationfeed.Entry{}, fs.entries[pos:]...)
		end, changed := len(fs.entries), fs.changed
		fs.mu.Unlock()
		if len(out) > 0 || wait == 0 {
			json.NewEncoder(w).Encode(revocationfeed.Page{Cursor: strconv.Itoa(end), Revoked: out})
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			json.NewEncoder(w).Encode(revocationfeed.Page{Cursor: strconv.Itoa(pos), Revoked: []revocationfeed.Entry{}})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// next returns the "after" of the next request the feed makes.
func (fs *feedServer) next(t *testing.T) string {
	t.Helper()
	select {
	case after := <-fs.requests:
		return after
	case <-time.After(20 * time.Second):
		t.Fatal("the feed made no further request")
		return ""
	}
}

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var feedT0 = fakeclock.Start

func startFeed(t *testing.T, fs *feedServer, clock *fakeclock.Clock, reg *prometheus.Registry) *RevocationFeed {
	t.Helper()
	f, err := NewRevocationFeed(RevocationFeedConfig{
		URL: fs.srv.URL, AdminToken: "admin-secret", Registry: reg, Clock: clock.Now,
		Wait: 10 * time.Second, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return f
}

func waitSynced(t *testing.T, f *RevocationFeed) {
	t.Helper()
	select {
	case <-f.Synced():
	case <-time.After(20 * time.Second):
		t.Fatal("the feed never finished its first load")
	}
}

func TestRevocationFeedInitialLoad(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "admin-secret")
	fs.add("sid-a", feedT0.Add(10*time.Minute))
	fs.add("sid-old", feedT0.Add(-time.Minute)) // every token already expired
	fs.add("sid-a", feedT0.Add(5*time.Minute))  // an earlier until never shortens
	clock := fakeclock.New()
	reg := prometheus.NewRegistry()
	f := startFeed(t, fs, clock, reg)
	waitSynced(t, f)

	if !f.Ready() {
		t.Error("Ready() = false after Synced")
	}
	for sid, want := range map[string]bool{"sid-a": true, "sid-old": false, "sid-unknown": false} {
		if got := f.Revoked(sid); got != want {
			t.Errorf("Revoked(%s) = %v, want %v", sid, got, want)
		}
	}
	clock.Advance(10 * time.Minute)
	if f.Revoked("sid-a") {
		t.Error("sid-a still denied at its until")
	}
	if got := metricValue(f.metrics.received); got != 3 {
		t.Errorf("received_total = %v, want 3", got)
	}
	if got := metricValue(f.metrics.up); got != 1 {
		t.Errorf("feed_up = %v, want 1", got)
	}
}

func TestRevocationFeedLongPoll(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "admin-secret")
	clock := fakeclock.New()
	f := startFeed(t, fs, clock, prometheus.NewRegistry())
	waitSynced(t, f)
	for fs.next(t) != "0" {
	}
	// The feed now waits on cursor 0 (or is about to).
	fs.add("sid-new", feedT0.Add(time.Minute))
	for fs.next(t) != "1" { // the request after the entry: it has been applied
	}
	if !f.Revoked("sid-new") {
		t.Error("sid-new not denied after the long poll delivered it")
	}
}

func TestRevocationFeedKeepsListWhenUnreachable(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "admin-secret")
	fs.add("sid-a", feedT0.Add(time.Hour))
	clock := fakeclock.New()
	f := startFeed(t, fs, clock, prometheus.NewRegistry())
	waitSynced(t, f)

	fs.failing.Store(http.StatusServiceUnavailable)
	fs.add("sid-b", feedT0.Add(time.Hour)) // wakes the pending long poll, which now fails
	// Several failed requests: the feed retries with backoff.
	for range 4 {
		fs.next(t)
	}
	if !f.Revoked("sid-a") || !f.Ready() {
		t.Errorf("during the outage: Revoked(sid-a) = %v, Ready = %v; want the list kept and ready", f.Revoked("sid-a"), f.Ready())
	}
	if got := metricValue(f.metrics.up); got != 0 {
		t.Errorf("feed_up = %v during the outage, want 0", got)
	}
	if got := metricValue(f.metrics.errors.WithLabelValues("status")); got < 1 {
		t.Errorf("errors_total{reason=status} = %v, want ≥ 1", got)
	}

	fs.failing.Store(0)
	for fs.next(t) != "2" {
	}
	if !f.Revoked("sid-b") {
		t.Error("sid-b not denied after the feed recovered")
	}
	if got := metricValue(f.metrics.up); got != 1 {
		t.Errorf("feed_up = %v after recovery, want 1", got)
	}
}

func TestRevocationFeedNotReadyUntilLoaded(t *testing.T) {
	t.Parallel()
	fs := newFeedServer(t, "another-token") // our token is refused
	clock := fakeclock.New()
	f := startFeed(t, fs, clock, prometheus.NewRegistry())
	for range 3 {
		fs.next(t)
	}
	if f.Ready() {
		t.Error("Ready() = true without any successful load")
	}
	select {
	case <-f.Synced():
		t.Error("Synced closed without any successful load")
	default:
	}
	if got := metricValue(f.metrics.errors.WithLabelValues("status")); got < 1 {
		t.Errorf("errors_total{reason=status} = %v, want ≥ 1", got)
	}
}

func TestRevocationFeedUnreachableAddress(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there now
	failed := make(chan struct{}, 100)
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			failed <- struct{}{}
		}
		return resp, err
	})}
	f, err := NewRevocationFeed(RevocationFeedConfig{URL: addr, AdminToken: "x", Client: client, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for range 3 {
		select {
		case <-failed:
		case <-time.After(20 * time.Second):
			t.Fatal("the feed made no further attempt")
		}
	}
	cancel()
	// Run has returned only after counting every failed attempt: the
	// transport signals a failure before the feed counts it.
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if got := metricValue(f.metrics.errors.WithLabelValues("unreachable")); got < 3 {
		t.Errorf("errors_total{reason=unreachable} = %v, want ≥ 3", got)
	}
	if f.Ready() {
		t.Error("Ready() with an unreachable feed")
	}
}

func TestNewRevocationFeedErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  RevocationFeedConfig
		want []string
	}{
		{"empty", RevocationFeedConfig{}, []string{"revocations-url: required", "admin-token: required"}},
		{"relative", RevocationFeedConfig{URL: "refresher:8080/v1/revocations", AdminToken: "x"}, []string{"absolute http or https"}},
		{"scheme", RevocationFeedConfig{URL: "ftp://h/v1/revocations", AdminToken: "x"}, []string{"absolute http or https"}},
		{"negative", RevocationFeedConfig{URL: "http://h", AdminToken: "x", Wait: -time.Second}, []string{"wait -1s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewRevocationFeed(tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestRevocationFeedURL: a base URL gets the feed's path; a full one is kept.
func TestRevocationFeedURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://refresher:8080":                  "http://refresher:8080/v1/revocations",
		"http://refresher:8080/":                 "http://refresher:8080/v1/revocations",
		"https://auth.example/tg/v1/revocations": "https://auth.example/tg/v1/revocations",
	} {
		f, err := NewRevocationFeed(RevocationFeedConfig{URL: in, AdminToken: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if f.url != want {
			t.Errorf("URL %q → %q, want %q", in, f.url, want)
		}
	}
}

func BenchmarkRevocationFeedRevoked(b *testing.B) {
	f, err := NewRevocationFeed(RevocationFeedConfig{URL: "http://h", AdminToken: "x"})
	if err != nil {
		b.Fatal(err)
	}
	entries := make([]revocationfeed.Entry, 10000)
	for i := range entries {
		entries[i] = revocationfeed.Entry{SessionID: "sid-" + strconv.Itoa(i), Until: time.Now().Add(time.Hour)}
	}
	f.apply(entries)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Revoked("sid-5000")
		}
	})
}

// A feed that has never synced cannot say whether a session was revoked
// before extauthz started: tokens that carry a sid get UNAVAILABLE (HTTP
// 503 + Retry-After), never an allow; tokens without a sid (nothing the
// feed could list) are decided as usual. Once the feed syncs, the revoked
// session is token_revoked and the others are allowed.
func TestCheckFailsClosedUntilFeedSynced(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	fs := newFeedServer(t, "admin-secret")
	fs.add("sess-1", feedT0.Add(time.Hour)) // revoked before extauthz started
	fs.failing.Store(http.StatusServiceUnavailable)
	clock := fakeclock.New()
	feed := startFeed(t, fs, clock, prometheus.NewRegistry())
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.Denylist = feed; o.Clock = clock.Now })
	for range 3 { // the feed has failed at least twice
		fs.next(t)
	}
	web := httptest.NewServer(h.srv.Routes())
	t.Cleanup(web.Close)

	revoked := k.token(t, claimsAt(clock.Now()))
	other := claimsAt(clock.Now())
	other["sid"] = "sess-2"
	live := k.token(t, other)
	noSID := claimsAt(clock.Now())
	delete(noSID, "sid")
	service := k.token(t, noSID)

	for range 2 { // a miss, then a cache hit
		for name, tok := range map[string]string{"revoked": revoked, "live": live} {
			resp, err := h.srv.Check(context.Background(), bearerReq(tok))
			if grpcCode(err) != "Unavailable" {
				t.Fatalf("%s session before the feed synced: %v %v, want UNAVAILABLE", name, resp, err)
			}
			hdr := forwardAuthHeaders(t, web.URL, map[string]string{"authorization": "Bearer " + tok})
			if hdr.Get("Status") != "503" || hdr.Get("Retry-After") == "" {
				t.Fatalf("%s session over forward-auth before the feed synced: %v", name, hdr)
			}
		}
		if got := h.check(t, bearerReq(service)).reason(); got != "allow" {
			t.Fatalf("token without sid before the feed synced: %s", got)
		}
	}
	if got := counterValue(t, h.srv.metrics.checks.WithLabelValues(decisionError, string(ReasonRevocationsUnavailable))); got != 8 {
		t.Errorf("checks_total{error,revocations_unavailable} = %v, want 8", got)
	}

	fs.failing.Store(0)
	waitSynced(t, feed)
	if got := h.check(t, bearerReq(revoked)).reason(); got != "token_revoked" {
		t.Fatalf("revoked session after the feed synced: %s", got)
	}
	if got := h.check(t, bearerReq(live)).reason(); got != "allow" {
		t.Fatalf("live session after the feed synced: %s", got)
	}
}

// RevocationFeedConfig.FailOpen (--revocations-fail-open) restores the
// old behaviour on purpose: before the first sync, sid tokens are decided
// without the denylist. Readiness still says not ready.
func TestCheckFailOpenBeforeFeedSynced(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	fs := newFeedServer(t, "admin-secret")
	fs.add("sess-1", feedT0.Add(time.Hour))
	fs.failing.Store(http.StatusServiceUnavailable)
	clock := fakeclock.New()
	feed, err := NewRevocationFeed(RevocationFeedConfig{
		URL: fs.srv.URL, AdminToken: "admin-secret", Clock: clock.Now, FailOpen: true,
		Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.Denylist = feed; o.Clock = clock.Now })
	fs.next(t)
	if got := h.check(t, bearerReq(k.token(t, claimsAt(clock.Now())))).reason(); got != "allow" {
		t.Fatalf("fail-open before the first sync: %s", got)
	}
	if h.srv.Ready() {
		t.Fatal("Ready() before the first sync, with fail-open")
	}
}
