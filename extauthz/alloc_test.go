//go:build !race

package extauthz

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// A cache hit allocates nothing over gRPC and only the request-header map
// over HTTP forward-auth: the allow answers are ready-made per cache entry
// (docs/benchmarks.md has the figures). This counts allocations, not time,
// so it is deterministic; it is not parallel because testing.AllocsPerRun
// counts the whole process's allocations, and the race detector (excluded
// by the build tag) allocates on its own.
func TestCachedCheckAllocs(t *testing.T) {
	k := newTestKey(t, "ES256", "allocs")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	cfg.Token.RemoveAuthorizationHeader = true
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	tok := k.token(t, claimsAt(h.clock.Now()))

	req := checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + tok, "origin": "https://app.test"})
	if a := h.check(t, req); !a.allowed || a.set["x-user-id"] == "" {
		t.Fatalf("check: %+v", a)
	}
	if n := testing.AllocsPerRun(1000, func() { h.srv.Check(t.Context(), req) }); n != 0 {
		t.Errorf("gRPC Check on a cache hit: %v allocations, want 0", n)
	}
	// Both spellings of an ECDSA signature, (r, s) and (r, n−s), are one
	// cache entry (under the low-S one); either is a hit without allocating.
	for _, spelling := range []string{"low-S", "high-S"} {
		tok := tok
		if highS(t, tok, "ES256") != (spelling == "high-S") {
			tok = twinS(t, tok, "ES256")
		}
		req := checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + tok, "origin": "https://app.test"})
		if a := h.check(t, req); !a.allowed {
			t.Fatalf("%s: %+v", spelling, a)
		}
		if n := testing.AllocsPerRun(1000, func() { h.srv.Check(t.Context(), req) }); n != 0 {
			t.Errorf("gRPC Check on a cache hit by the %s spelling: %v allocations, want 0", spelling, n)
		}
	}
	if n := h.srv.state.Load().cache.len(); n != 1 {
		t.Errorf("%d cache entries for one token", n)
	}
	// With tracing off, a request that carries a trace context (Envoy
	// forwards traceparent when its own tracing is on) costs nothing more:
	// the headers are not read for it and no span is started.
	traced := checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + tok, "origin": "https://app.test",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=x"})
	if n := testing.AllocsPerRun(1000, func() { h.srv.Check(t.Context(), traced) }); n != 0 {
		t.Errorf("gRPC Check on a cache hit with a traceparent, tracing off: %v allocations, want 0", n)
	}

	r := forwardAuthRequest(tok)
	r.Header.Set("Origin", "https://app.test")
	w := &headerRecorder{h: http.Header{}}
	h.srv.handleForwardAuth(w, r)
	if w.status != http.StatusOK || w.h.Get("X-User-Id") == "" {
		t.Fatalf("forward-auth: %d %v", w.status, w.h)
	}
	if n := testing.AllocsPerRun(1000, func() { clear(w.h); h.srv.handleForwardAuth(w, r) }); n != 0 {
		t.Errorf("forward-auth on a cache hit: %v allocations, want 0", n)
	}
}

// Forward-auth of a cached token allocates nothing beyond what net/http
// makes: the whole HTTP handler (Routes, with its routing) against a
// handler that only answers 200, with the same reused request and recorder,
// and then through a real net/http server on loopback.
func TestForwardAuthAllocsLikeNoop(t *testing.T) {
	k := newTestKey(t, "ES256", "allocs-http")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	tok := k.token(t, claimsAt(h.clock.Now()))
	routes := h.srv.Routes()
	noop := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	for _, origin := range []string{"", "https://app.test"} {
		r := forwardAuthRequest(tok)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		w := &headerRecorder{h: http.Header{}}
		routes.ServeHTTP(w, r)
		if w.status != http.StatusOK || w.h.Get("X-User-Id") == "" {
			t.Fatalf("forward-auth: %d %v", w.status, w.h)
		}
		base := testing.AllocsPerRun(1000, func() { clear(w.h); noop.ServeHTTP(w, r) })
		n := testing.AllocsPerRun(1000, func() { clear(w.h); routes.ServeHTTP(w, r) })
		if n > base {
			t.Errorf("forward-auth (origin %q) on a cache hit: %v allocations, a no-op handler %v: want no more", origin, n, base)
		}
	}

	// Over loopback: each server gets the same request on one keep-alive
	// connection from a raw client that reuses its buffers (an http.Client
	// would allocate per response header), so what is counted is the
	// server's side. net/http itself allocates for any handler that sets
	// response headers (the response's header map, and its copy at
	// WriteHeader), so the baseline answers with the same headers as
	// tokengate, from values made once: the difference is tokengate's own.
	perRequest := func(handler http.Handler) float64 {
		srv := httptest.NewServer(handler)
		defer srv.Close()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := []byte("GET /authz/api/orders/42 HTTP/1.1\r\nHost: auth.test\r\nAuthorization: Bearer " + tok +
			"\r\nAccept: application/json\r\nUser-Agent: alloc-test\r\n\r\n")
		buf := make([]byte, 8192)
		do := func() {
			if _, err := conn.Write(req); err != nil {
				t.Fatal(err)
			}
			n := 0
			for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) { // no body: Content-Length 0
				m, err := conn.Read(buf[n:])
				if err != nil {
					t.Fatal(err)
				}
				n += m
			}
			if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 ")) {
				t.Fatalf("answer %q", buf[:n])
			}
		}
		do() // the connection's own allocations, then only keep-alive requests
		return testing.AllocsPerRun(500, do)
	}
	answer := &headerRecorder{h: http.Header{}}
	routes.ServeHTTP(answer, forwardAuthRequest(tok))
	sameHeaders := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for k, v := range answer.h {
			h[k] = v
		}
		w.WriteHeader(http.StatusOK)
	})
	empty, base, n := perRequest(noop), perRequest(sameHeaders), perRequest(routes)
	t.Logf("over loopback, per request: no-op handler %v allocations, no-op with forward-auth's %d response headers %v, forward-auth %v",
		empty, len(answer.h), base, n)
	if n > base {
		t.Errorf("forward-auth over loopback: %v allocations per request, a no-op server with the same answer %v: want no more", n, base)
	}
}

// An app chosen by a context extension costs nothing more: the app is two
// map lookups and its cache class a slice index.
func TestCachedCheckAllocsApps(t *testing.T) {
	k := newTestKey(t, "ES256", "allocs-apps")
	cfg := baseConfig(t, k)
	cfg.Apps = []App{{
		Name: "admin", Match: AppMatch{ContextExtensions: map[string]string{"app": "admin"}},
		Routes:    []Route{{PathPrefix: "/api/", Action: ActionRequired, RolesAny: []string{"user"}, ContextExtensions: map[string]string{"tier": "gold"}}},
		Audiences: []string{testAudience}, Headers: &AppHeaders{Identity: []HeaderMapping{{Name: "x-admin-user", Claim: "sub"}}},
	}}
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) })
	tok := k.token(t, claimsAt(h.clock.Now()))
	req := bearerReq(tok)
	req.Attributes.ContextExtensions = map[string]string{"app": "admin", "tier": "gold"}
	if a := h.check(t, req); !a.allowed || a.set["x-admin-user"] == "" {
		t.Fatalf("check: %+v", a)
	}
	if n := testing.AllocsPerRun(1000, func() { h.srv.Check(t.Context(), req) }); n != 0 {
		t.Errorf("gRPC Check of an app on a cache hit: %v allocations, want 0", n)
	}
}

// The cache's byte bound is only as good as entrySize's estimate: filled
// with tokens whose every ready-made answer has been built (four gRPC
// variants and the HTTP one), the heap grows by no more than the cache
// accounts, and by at least a third of it (the estimate is an upper bound,
// not a wild one). Not parallel: it reads the process's heap.
func TestCacheBytesEstimate(t *testing.T) {
	k := newTestKey(t, "ES256", "estimate")
	for _, tc := range []struct {
		name  string
		extra int // bytes of an extra claim
	}{{"typical token", 0}, {"5.5 KB token", 5000}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t, k)
			cfg.CORS.AllowedOrigins = []string{"https://app.test"}
			cfg.Token.RemoveAuthorizationHeader = true
			cfg.Token.Cookie = "at"
			cfg.Headers.PayloadHeader = "x-jwt-payload"
			cfg.Cache.Size = 1 << 20
			cfg.Cache.MaxBytes = 1 << 30
			h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
			const n = 300
			var reqs [][]*authv3.CheckRequest
			var https []*http.Request
			for i := range n {
				c := claimsAt(h.clock.Now())
				c["jti"] = "jti-" + strconv.Itoa(i)
				if tc.extra > 0 {
					c["groups"] = strings.Repeat("g", tc.extra)
				}
				tok := k.token(t, c)
				var rs []*authv3.CheckRequest
				for _, hdrs := range []map[string]string{
					{"authorization": "Bearer " + tok}, {"authorization": "Bearer " + tok, "origin": "https://app.test"},
					{"cookie": "at=" + tok}, {"cookie": "at=" + tok, "origin": "https://app.test"},
				} {
					rs = append(rs, checkReq("GET", "app.test", "/api/things", hdrs))
				}
				reqs = append(reqs, rs)
				https = append(https, forwardAuthRequest(tok))
			}
			w := &headerRecorder{h: http.Header{}}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range n {
				for _, r := range append(reqs[i], reqs[i]...) { // a miss, then a hit per variant
					if _, err := h.srv.Check(t.Context(), r); err != nil {
						t.Fatal(err)
					}
				}
				clear(w.h)
				h.srv.handleForwardAuth(w, https[i])
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			c := h.srv.state.Load().cache
			if c.len() != n {
				t.Fatalf("%d entries cached, want %d", c.len(), n)
			}
			actual := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			estimate := c.bytes() / n
			t.Logf("per entry: heap %d bytes, estimate %d bytes", actual, estimate)
			if estimate < actual || estimate > 3*actual {
				t.Fatalf("estimate %d bytes per entry, heap %d: want heap ≤ estimate ≤ 3 × heap", estimate, actual)
			}
			runtime.KeepAlive(reqs)
			runtime.KeepAlive(https)
		})
	}
}

// The cache's byte bound holds with 8 KB tokens: a stream of distinct
// tokens that each fill a large share of a small cache (every one also
// answered from the cache over gRPC and HTTP, so its ready-made answers
// exist) never makes the cache account more than max_bytes, evicts to stay
// under it, and the heap the cache keeps stays within the bound too. Not
// parallel: it reads the process's heap.
func TestCacheByteBoundLargeTokens(t *testing.T) {
	k := newTestKey(t, "ES256", "bound-8k")
	cfg := baseConfig(t, k)
	cfg.CORS.AllowedOrigins = []string{"https://app.test"}
	const maxBytes = 1 << 20
	cfg.Cache.MaxBytes = maxBytes // cfg.Cache.Size stays the default
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
	c := h.srv.state.Load().cache

	const n = 600 // 600 × ≈ 8 KB tokens: several times the bound
	toks := make([]string, n)
	for i := range toks {
		cl := claimsAt(h.clock.Now())
		cl["jti"] = "jti-" + strconv.Itoa(i)
		cl["groups"] = strings.Repeat("g", 5750) // base64: the token is just under 8 KB, the longest accepted by default
		toks[i] = k.token(t, cl)
	}
	if l := len(toks[0]); l < 7900 || l > 8192 {
		t.Fatalf("token is %d bytes, want ≈ 8 KB", l)
	}
	w := &headerRecorder{h: http.Header{}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, tok := range toks {
		req := checkReq("GET", "app.test", "/api/things", map[string]string{"authorization": "Bearer " + tok, "origin": "https://app.test"})
		for range 2 { // a miss, then a hit that builds the ready-made answer
			if a := h.check(t, req); !a.allowed {
				t.Fatalf("token %d: %+v", i, a)
			}
		}
		clear(w.h)
		h.srv.handleForwardAuth(w, forwardAuthRequest(tok))
		if w.status != http.StatusOK {
			t.Fatalf("token %d: forward-auth %d", i, w.status)
		}
		if b := c.bytes(); b > maxBytes {
			t.Fatalf("after %d tokens the cache accounts %d bytes, over max_bytes %d", i+1, b, maxBytes)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries, %d bytes accounted, heap grew %d bytes (bound %d)", c.len(), c.bytes(), grown, maxBytes)
	if c.len() >= n || c.len() == 0 {
		t.Errorf("%d entries of %d tokens: want eviction to the byte bound", c.len(), n)
	}
	if grown > maxBytes {
		t.Errorf("the heap grew by %d bytes with the cache full, over max_bytes %d", grown, maxBytes)
	}
	runtime.KeepAlive(toks)
}

// A full cache is most of the process's live heap, and every garbage
// collection marks it: each entry should keep few objects. This reports the
// heap objects and bytes per entry of a cache filled by forward-auth
// misses (the state of a busy server's cache: most entries are never hit),
// and guards the count. Not parallel: it reads the process's heap.
func TestCacheObjectsPerEntry(t *testing.T) {
	k := newTestKey(t, "ES256", "objects")
	cfg := baseConfig(t, k)
	cfg.Cache.Size = 1 << 20
	cfg.Cache.MaxBytes = 1 << 30
	h := newHarness(t, cfg, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) })
	const n = 2000
	reqs := make([]*http.Request, n)
	for i := range reqs {
		c := claimsAt(h.clock.Now())
		c["jti"] = "jti-" + strconv.Itoa(i)
		reqs[i] = forwardAuthRequest(k.token(t, c))
	}
	w := &headerRecorder{h: http.Header{}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, r := range reqs {
		clear(w.h)
		h.srv.handleForwardAuth(w, r)
		if w.status != http.StatusOK {
			t.Fatalf("forward-auth %d", w.status)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if l := h.srv.state.Load().cache.len(); l != n {
		t.Fatalf("%d entries cached, want %d", l, n)
	}
	objects := float64(int64(after.HeapObjects)-int64(before.HeapObjects)) / n
	bytes := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("per cache entry: %.1f heap objects, %.0f bytes", objects, bytes)
	const maxObjects = 20 // 14 when written (50 before the entries were compacted)
	if objects > maxObjects {
		t.Errorf("%.1f heap objects per cache entry, want at most %d", objects, maxObjects)
	}
	runtime.KeepAlive(reqs)
}
