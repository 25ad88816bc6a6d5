package extauthz

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/benchkit"
	"github.com/tokengate/tokengate/internal/serve"
)

// BenchmarkForwardAuthLoopback measures a cached forward-auth allow end to
// end over loopback, on a server with tokengate's own settings
// (serve.DefaultHTTPLimits), against a no-op handler on the same server
// settings that answers with the same response headers (the fair floor: a
// forward-auth server must send its identity headers) and against one that
// sends none. One keep-alive connection from a raw client that reuses its
// buffers, so the client's own work is small and equal for all three; run
// with -cpuprofile to see where the server's time goes.
func BenchmarkForwardAuthLoopback(b *testing.B) {
	k := newTestKey(b, "ES256", "bench-loopback")
	cfg := baseConfig(b, k)
	h := newHarness(b, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	tok := k.token(b, claimsAt(h.clock.Now()))
	routes := h.srv.Routes()
	answer := &headerRecorder{h: http.Header{}}
	routes.ServeHTTP(answer, forwardAuthRequest(tok))
	if answer.status != http.StatusOK || answer.h.Get("X-User-Id") == "" {
		b.Fatalf("forward-auth: %d %v", answer.status, answer.h)
	}
	sameHeaders := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for k, v := range answer.h {
			h[k] = v
		}
		w.WriteHeader(http.StatusOK)
	})
	empty := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	req := []byte("GET /authz/api/orders/42 HTTP/1.1\r\nHost: auth.test\r\nAuthorization: Bearer " + tok +
		"\r\nAccept: application/json\r\nUser-Agent: bench\r\n\r\n")
	// tokengate-full-cache is tokengate as a busy server runs it: the real
	// clock (one reading per check) and a cache filled to its default
	// bounds with other tokens, the live heap every collection marks. It
	// runs last, since the heap it keeps slows the collector for every
	// variant after it.
	fullCache := func(b *testing.B) (http.Handler, []byte) {
		b.Helper()
		h := newHarness(b, baseConfig(b, k), func(o *Options) {
			o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
			o.Clock = nil
		})
		routes := h.srv.Routes()
		w := &headerRecorder{h: http.Header{}}
		var tok string
		for i := range DefaultCacheSize {
			c := claimsAt(time.Now())
			c["jti"] = "jti-" + strconv.Itoa(i)
			tok = k.token(b, c)
			clear(w.h)
			routes.ServeHTTP(w, forwardAuthRequest(tok))
			if w.status != http.StatusOK {
				b.Fatalf("forward-auth: %d", w.status)
			}
		}
		c := h.srv.state.Load().cache
		b.Logf("full cache: %d entries, %d bytes accounted", c.len(), c.bytes())
		return routes, []byte("GET /authz/api/orders/42 HTTP/1.1\r\nHost: auth.test\r\nAuthorization: Bearer " + tok +
			"\r\nAccept: application/json\r\nUser-Agent: bench\r\n\r\n")
	}
	for _, tc := range []struct {
		name    string
		handler http.Handler
	}{{"noop", empty}, {"noop-same-headers", sameHeaders}, {"tokengate", routes}, {"tokengate-full-cache", nil}} {
		handler, req := tc.handler, req
		if handler == nil {
			handler, req = fullCache(b)
		}
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			lim := serve.DefaultHTTPLimits
			srv := lim.Server(handler)
			go srv.Serve(lim.Listener(ln))
			defer srv.Close()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, 8192)
			do := func() {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				n := 0
				for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
					m, err := conn.Read(buf[n:])
					if err != nil {
						b.Fatal(err)
					}
					n += m
				}
				if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 ")) {
					b.Fatalf("answer %q", buf[:n])
				}
			}
			do()
			b.ReportAllocs()
			cpu := benchkit.StartCPU()
			gc0 := gcCPU()
			for b.Loop() {
				do()
			}
			cpu.Report(b)
			// gc-cpu-ns/op: the collector's share (runtime/metrics, an
			// estimate the runtime updates at each cycle).
			b.ReportMetric((gcCPU()-gc0)*1e9/float64(b.N), "gc-cpu-ns/op")
		})
	}
}

// gcCPU is the CPU time the garbage collector has used, in seconds.
func gcCPU() float64 {
	m := []rtmetrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	rtmetrics.Read(m)
	return m[0].Value.Float64()
}
