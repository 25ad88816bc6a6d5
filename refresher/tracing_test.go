package refresher_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/tracing"
	"github.com/tokengate/tokengate/internal/tracing/otlptest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// A refresh is a server span continuing the caller's traceparent, named
// after its route, with the rotation outcome as an attribute and each
// store call as a child span. No span holds a token, the subject or the
// session id.
func TestTracingRefreshSpans(t *testing.T) {
	t.Parallel()
	rcv := otlptest.New(t)
	tp, err := tracing.Setup(t.Context(), "tokengate-refresher", func(k string) string {
		if k == tracing.EnvEndpoint {
			return rcv.URL
		}
		return ""
	}, nil)
	if err != nil || tp == nil {
		t.Fatalf("tracing.Setup: %v %v", tp, err)
	}
	t.Cleanup(tp.Close)
	rg := newRig(t, func(r *rigSetup) { r.opts.Tracer = tp.Tracer("test") })
	s := rg.startSession("")
	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	refresh := func(token string) response {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}.Encode()
		return rg.do(rg.request("POST", "/v1/token", "application/x-www-form-urlencoded", form,
			"Traceparent", "00-"+parentTrace+"-"+parentSpan+"-01"))
	}
	first := refresh(s.str("refresh_token"))
	again := refresh(s.str("refresh_token")) // within the grace window: the same pair
	rt := s.str("refresh_token")
	unknown := refresh(rt[:len(rt)-4] + "AAAA") // well formed, never issued
	if first.Status != http.StatusOK || again.Status != http.StatusOK || unknown.Status != http.StatusBadRequest {
		t.Fatalf("refreshes: %d %d %d", first.Status, again.Status, unknown.Status)
	}
	// A path holding the session id: the span is named by its route.
	if r := rg.admin("DELETE", "/v1/sessions/"+s.str("session_id"), ""); r.Status != http.StatusOK {
		t.Fatalf("sign-out: %d %s", r.Status, r.Raw)
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	reqs := rcv.Named("POST /v1/token")
	if len(reqs) != 3 {
		t.Fatalf("%d POST /v1/token spans, want 3: %+v", len(reqs), rcv.Spans())
	}
	var outcomes []string
	for _, r := range reqs {
		if r.TraceID != parentTrace || r.ParentSpanID != parentSpan {
			t.Errorf("request span in trace %s under %s, want under the caller's %s", r.TraceID, r.ParentSpanID, parentSpan)
		}
		if r.Attributes["http.route"] != "POST /v1/token" {
			t.Errorf("http.route %q", r.Attributes["http.route"])
		}
		outcomes = append(outcomes, r.Attributes["tokengate.rotation.outcome"]+"/"+r.Attributes["http.response.status_code"])
	}
	if got, want := strings.Join(outcomes, " "), "rotated/200 replayed/200 unknown/400"; got != want {
		t.Errorf("outcomes %s, want %s", got, want)
	}
	if reqs[2].Attributes["tokengate.reason"] != "unknown" {
		t.Errorf("refused refresh reason %q", reqs[2].Attributes["tokengate.reason"])
	}
	var children []string
	for _, sp := range rcv.Spans() {
		if sp.ParentSpanID == reqs[0].SpanID {
			children = append(children, sp.Name)
		}
	}
	if got := strings.Join(children, " "); !strings.Contains(got, "store.get_token") || !strings.Contains(got, "store.rotate") {
		t.Errorf("children of the rotation's span: %q, want store.get_token and store.rotate", got)
	}
	secrets := []string{s.str("refresh_token"), s.str("access_token"), s.str("session_id"), "alice",
		first.str("refresh_token"), first.str("access_token")}
	for _, sp := range rcv.Spans() {
		for key, v := range sp.Attributes {
			for _, secret := range secrets {
				if strings.Contains(v, secret) || strings.Contains(sp.Name, secret) {
					t.Errorf("span %s attribute %s holds %q", sp.Name, key, secret)
				}
			}
		}
	}
	if sessions := rcv.Named("POST /v1/sessions"); len(sessions) != 1 || sessions[0].ParentSpanID != "" {
		t.Errorf("sign-in spans %+v, want one root span", sessions)
	}
	if outs := rcv.Named("DELETE /v1/sessions/{sid}"); len(outs) != 1 {
		t.Errorf("sign-out spans: %d, want 1", len(outs))
	}
}

// Run turns tracing on from the OTEL_* variables it is given and flushes
// the spans still buffered when it returns: no ForceFlush here.
func TestTracingRunFlushesAtShutdown(t *testing.T) {
	t.Parallel()
	rcv := otlptest.New(t)
	addrs := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- refresher.Run(ctx, testConfig(), refresher.RunConfig{
			Listen:      "127.0.0.1:0",
			OnListening: func(a net.Addr) { addrs <- a.String() },
			Getenv: func(key string) string {
				return map[string]string{tracing.EnvTracesEndpoint: rcv.URL + "/v1/traces"}[key]
			},
		}, refresher.Options{Store: memstore.New(), Keys: generateKeys(t)})
	}()
	addr := <-addrs
	for _, path := range []string{"/.well-known/jwks.json", "/healthz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if spans := rcv.Spans(); len(spans) != 1 || spans[0].Name != "GET /.well-known/jwks.json" || spans[0].Service != "tokengate-refresher" {
		t.Fatalf("spans after shutdown: %+v, want the JWKS request only (no probe spans)", spans)
	}
}
