package extauthz

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/tracing"
	"github.com/tokengate/tokengate/internal/tracing/otlptest"
)

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
	traceparent = "00-" + parentTrace + "-" + parentSpan + "-01"
)

// tracedProvider exports to a local OTLP/HTTP receiver, as
// OTEL_EXPORTER_OTLP_ENDPOINT would configure it.
func tracedProvider(t testing.TB) (*tracing.Provider, *otlptest.Receiver) {
	t.Helper()
	return tracedProviderTo(t, otlptest.New(t))
}

func tracedProviderTo(t testing.TB, rcv *otlptest.Receiver) (*tracing.Provider, *otlptest.Receiver) {
	t.Helper()
	tp, err := tracing.Setup(t.Context(), "tokengate-extauthz", func(k string) string {
		if k == tracing.EnvEndpoint {
			return rcv.URL
		}
		return ""
	}, nil)
	if err != nil || tp == nil {
		t.Fatalf("tracing.Setup: %v %v", tp, err)
	}
	t.Cleanup(tp.Close)
	return tp, rcv
}

// A check continues the trace of the traceparent Envoy forwards (gRPC)
// or the proxy sends (forward-auth): its span is a child of the caller's
// span, carries the decision, reason and cache use, and a cache miss has a
// signature verification child. The JWKS fetch has its own span. No name
// or attribute value holds the token.
func TestTracingCheckSpans(t *testing.T) {
	t.Parallel()
	tp, rcv := tracedProvider(t)
	k := newTestKey(t, "ES256", "trace")
	js := newJWKSServer(t, jwks(t, k))
	h := newHarness(t, urlConfig(js.URL), func(o *Options) { o.Tracer = tp.Tracer(instrumentationName) })
	waitReady(t, h.srv)
	tok := k.token(t, claimsAt(h.clock.Now()))
	expired := claimsAt(h.clock.Now().Add(-2 * 60 * 60 * 1e9))
	old := k.token(t, expired)

	withParent := func(auth string) map[string]string {
		return map[string]string{"authorization": "Bearer " + auth, "traceparent": traceparent, "tracestate": "vendor=x"}
	}
	for _, want := range []struct {
		token  string
		reason string
	}{{tok, ""}, {tok, ""}, {old, "token_expired"}} {
		a := h.check(t, checkReq("GET", "app.test", "/api/things", withParent(want.token)))
		if a.allowed != (want.reason == "") || want.reason != "" && a.reason() != want.reason {
			t.Fatalf("check: %+v, want %s", a, want.reason)
		}
	}
	r := forwardAuthRequest(tok)
	r.Header.Set("Traceparent", traceparent)
	w := &headerRecorder{h: http.Header{}}
	h.srv.handleForwardAuth(w, r)
	if w.status != http.StatusOK {
		t.Fatalf("forward-auth: %d", w.status)
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	checks := rcv.Named(spanCheck)
	if len(checks) != 4 {
		t.Fatalf("%d check spans, want 4: %+v", len(checks), rcv.Spans())
	}
	var got []string
	for _, s := range checks {
		if s.TraceID != parentTrace || s.ParentSpanID != parentSpan {
			t.Errorf("check span in trace %s under %s, want %s under %s", s.TraceID, s.ParentSpanID, parentTrace, parentSpan)
		}
		got = append(got, s.Attributes[attrDecision]+"/"+s.Attributes[attrReason]+"/"+s.Attributes[attrCache]+"/"+s.Attributes[attrApp])
	}
	want := []string{"allow/verified/miss/default", "allow/verified/hit/default", "deny/token_expired/miss/default", "allow/verified/hit/default"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("check spans (decision/reason/cache/app):\n got %v\nwant %v", got, want)
	}
	verifies := rcv.Named(spanVerify)
	if len(verifies) != 2 {
		t.Fatalf("%d verification spans, want 2 (the two misses)", len(verifies))
	}
	for i, v := range verifies {
		miss := []int{0, 2}[i]
		if v.ParentSpanID != checks[miss].SpanID || v.TraceID != parentTrace {
			t.Errorf("verification span %d: parent %s, want the check span %s", i, v.ParentSpanID, checks[miss].SpanID)
		}
	}
	if !verifies[1].StatusError {
		t.Errorf("the refused verification is not marked as an error")
	}
	fetches := rcv.Named(spanFetchJWKS)
	if len(fetches) == 0 || fetches[0].Attributes[attrProvider] != "idp" || fetches[0].Attributes[attrStatus] != "200" || fetches[0].ParentSpanID != "" {
		t.Errorf("JWKS fetch spans %+v, want a root span of provider idp, status 200", fetches)
	}
	for _, s := range rcv.Spans() {
		for key, v := range s.Attributes {
			for _, secret := range []string{tok, old, strings.Split(tok, ".")[2], strings.Split(tok, ".")[1]} {
				if strings.Contains(v, secret) || strings.Contains(s.Name, secret) {
					t.Errorf("span %s attribute %s holds the token", s.Name, key)
				}
			}
		}
	}
}

// A feed poll is a client span with the entries it brought.
func TestTracingFeedSpans(t *testing.T) {
	t.Parallel()
	tp, rcv := tracedProvider(t)
	fs := newFeedServer(t, "admin")
	f, err := NewRevocationFeed(RevocationFeedConfig{URL: fs.srv.URL, AdminToken: "admin", Tracer: tp.Tracer(instrumentationName)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	<-f.Synced()
	cancel()
	<-done
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	polls := rcv.Named(spanPollRevocations)
	if len(polls) == 0 || polls[0].Attributes[attrEntries] != "0" || polls[0].StatusError {
		t.Fatalf("poll spans %+v, want one with 0 entries", polls)
	}
	for _, s := range polls {
		for key, v := range s.Attributes {
			if strings.Contains(v, "admin") {
				t.Errorf("poll span attribute %s holds the admin token", key)
			}
		}
	}
}

// Run turns tracing on from the OTEL_* variables it is given, hands its
// tracer to the revocation feed, and flushes the spans still buffered
// when it returns: no ForceFlush here.
func TestTracingRunFlushesAtShutdown(t *testing.T) {
	t.Parallel()
	rcv := otlptest.New(t)
	k := newTestKey(t, "ES256", "run")
	fs := newFeedServer(t, "admin")
	feed, err := NewRevocationFeed(RevocationFeedConfig{URL: fs.srv.URL, AdminToken: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, baseConfig(t, k), RunConfig{
			GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
			OnListening: func(_, h net.Addr) { addrs <- h.String() },
			Getenv: func(key string) string {
				return map[string]string{tracing.EnvEndpoint: rcv.URL, tracing.EnvServiceName: "edge"}[key]
			},
		}, Options{Denylist: feed})
	}()
	addr := <-addrs
	<-feed.Synced()
	req, _ := http.NewRequest("GET", "http://"+addr+"/authz/api/things", nil)
	req.Header.Set("Authorization", "Bearer "+k.token(t, claimsAt(time.Now())))
	req.Header.Set("Traceparent", traceparent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forward-auth: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checks := rcv.Named(spanCheck)
	if len(checks) != 1 || checks[0].ParentSpanID != parentSpan || checks[0].Service != "edge" {
		t.Fatalf("check spans after shutdown: %+v", checks)
	}
	if polls := rcv.Named(spanPollRevocations); len(polls) == 0 {
		t.Errorf("no feed poll span: Run did not give the feed its tracer")
	}
}
