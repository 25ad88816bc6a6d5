package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/refresher"
)

// The tests of this file count the process's goroutines, so they are not
// parallel (parallel tests run after every sequential one).

// hangBound is how long a client waits before calling a connection held
// forever. The limits under test are a few hundred milliseconds: this is a
// hang detector, not a timing assertion.
const hangBound = 10 * time.Second

// testHTTPLimits are small limits, so closing is quick to see.
var testHTTPLimits = serve.HTTPLimits{
	ReadHeaderTimeout: 200 * time.Millisecond,
	ReadTimeout:       300 * time.Millisecond,
	WriteTimeout:      time.Second,
	IdleTimeout:       300 * time.Millisecond,
	MaxHeaderBytes:    4 << 10,
	MaxConns:          64,
}

// sendAndDrain dials addr, writes raw, and reads until the server closes
// the connection. It fails if the server holds it past hangBound.
func sendAndDrain(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if raw != "" {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(hangBound))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %v (sent %q, got %q)", addr, hangBound, raw, b)
	}
	return string(b)
}

// waitGoroutinesAtMost waits for connections' goroutines to end.
func waitGoroutinesAtMost(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want ≤ %d (baseline)\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowAndIdleHTTP is the same attack on any HTTP listener: headers that
// never end, a Content-Length whose body never comes (on a route that
// reads none and on the given body route), a keep-alive connection left
// idle, and headers over the size limit. Each connection is closed by the
// server.
func slowAndIdleHTTP(t *testing.T, addr, bodyRoute string) {
	t.Helper()
	const conns = 20
	done := make(chan string, 4*conns)
	for range conns {
		go func() { done <- sendAndDrainNoFatal(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ") }()
		go func() {
			done <- sendAndDrainNoFatal(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
		}()
		go func() {
			done <- sendAndDrainNoFatal(addr, "POST "+bodyRoute+" HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=")
		}()
		go func() { done <- sendAndDrainNoFatal(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n") }()
	}
	for range 4 * conns {
		if msg := <-done; strings.HasPrefix(msg, "HELD") {
			t.Fatal(msg)
		}
	}
	big := "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n"
	if got := sendAndDrain(t, addr, big); !strings.Contains(got, " 431 ") {
		t.Fatalf("headers over --http-max-header-bytes: %q, want 431", got)
	}
}

func sendAndDrainNoFatal(addr, raw string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	io.WriteString(c, raw)
	c.SetReadDeadline(time.Now().Add(hangBound))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "HELD: connection still open after " + hangBound.String() + "; sent " + raw + "; got " + string(b)
	}
	return string(b)
}

func startTestExtauthz(t *testing.T, run extauthz.RunConfig) (grpcAddr, httpAddr string, stop func()) {
	t.Helper()
	f := newEAFixture(t)
	cfg := extauthz.Config{Providers: []extauthz.Provider{{Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: f.jwksPath}}}
	addrs := make(chan [2]net.Addr, 1)
	run.GRPCListen, run.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	run.OnListening = func(g, h net.Addr) { addrs <- [2]net.Addr{g, h} }
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- extauthz.Run(ctx, cfg, run, extauthz.Options{}) }()
	select {
	case a := <-addrs:
		grpcAddr, httpAddr = a[0].String(), a[1].String()
	case err := <-served:
		t.Fatalf("extauthz.Run: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-served; err != nil {
			t.Errorf("extauthz.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	// Both servers are accepting (their goroutines are part of a baseline).
	if got := sendAndDrain(t, httpAddr, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.Contains(got, " 200 ") {
		t.Fatalf("warm-up: %q", got)
	}
	if c, err := net.Dial("tcp", grpcAddr); err == nil {
		c.Close()
	}
	return grpcAddr, httpAddr, stop
}

// extauthz HTTP: slow headers, slow bodies, idle keep-alive and oversized
// headers are all cut within the configured limits, and the goroutines
// they held are gone afterwards.
func TestExtauthzHTTPSlowAndIdle(t *testing.T) {
	_, httpAddr, _ := startTestExtauthz(t, extauthz.RunConfig{HTTPLimits: testHTTPLimits})
	base := runtime.NumGoroutine()
	slowAndIdleHTTP(t, httpAddr, "/authz/api")
	// Forward-auth refuses a body at once, without waiting for it.
	if got := sendAndDrain(t, httpAddr, "POST /authz/api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"); !strings.Contains(got, " 413 ") || !strings.Contains(got, "request_body_not_accepted") {
		t.Fatalf("forward-auth with a body: %q, want 413", got)
	}
	waitGoroutinesAtMost(t, base)
}

// refresher HTTP: the same attacks, including a body that never comes on
// POST /v1/token (which reads its body).
func TestRefresherHTTPSlowAndIdle(t *testing.T) {
	var rf refresherFlags
	rf.register(flag.NewFlagSet("refresher", flag.ContinueOnError))
	rf.dev, rf.store, rf.issuer, rf.audience = true, "memory://", "https://auth.test", "api"
	rf.adminToken = "0123456789abcdef0123"
	ctx, cancel := context.WithCancel(context.Background())
	s, err := rf.build(ctx, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer s.opts.Store.Close()
	s.run.HTTPLimits = testHTTPLimits
	s.run.HTTPLimits.WriteTimeout = s.cfg.RevocationsMaxWait + time.Second
	s.run.DrainPeriod = 0
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.run.Listener = ln
	served := make(chan error, 1)
	go func() { served <- refresher.Run(ctx, s.cfg, s.run, s.opts) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	// The server is accepting (its goroutines are part of the baseline).
	if got := sendAndDrain(t, ln.Addr().String(), "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.Contains(got, " 200 ") {
		t.Fatalf("warm-up: %q", got)
	}
	base := runtime.NumGoroutine()
	slowAndIdleHTTP(t, ln.Addr().String(), "/v1/token")
	waitGoroutinesAtMost(t, base)
}

// --http-max-connections holds: beyond it a connection is not served
// until one of the others closes.
func TestHTTPConnectionLimit(t *testing.T) {
	lim := serve.DefaultHTTPLimits
	lim.MaxConns = 2
	_, httpAddr, _ := startTestExtauthz(t, extauthz.RunConfig{HTTPLimits: lim})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	third, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	// Not served while two connections are open (a bounded look).
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := third.Read(make([]byte, 1)); n > 0 {
		t.Fatal("a third connection was served over --http-max-connections=2")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(hangBound))
	b, err := io.ReadAll(third)
	if !strings.Contains(string(b), " 200 ") {
		t.Fatalf("after a slot freed: %q %v", b, err)
	}
}

// gRPC: a TCP connection that never sends the HTTP/2 preface is closed
// after --grpc-handshake-timeout; an HTTP/2 connection without streams is
// sent away after --grpc-max-connection-idle; goroutines return to the
// baseline.
func TestGRPCIdleConnections(t *testing.T) {
	lim := serve.DefaultGRPCLimits
	lim.HandshakeTimeout = 200 * time.Millisecond
	lim.MaxConnectionIdle = 300 * time.Millisecond
	grpcAddr, _, _ := startTestExtauthz(t, extauthz.RunConfig{GRPCLimits: lim})
	base := runtime.NumGoroutine()
	done := make(chan string, 20)
	for range 20 {
		go func() { done <- sendAndDrainNoFatal(grpcAddr, "") }()
	}
	for range 20 {
		if msg := <-done; strings.HasPrefix(msg, "HELD") {
			t.Fatal(msg)
		}
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	if !conn.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("an idle gRPC connection stayed open past --grpc-max-connection-idle")
	}
	conn.Close()
	waitGoroutinesAtMost(t, base)
}

// --grpc-max-connections holds, and --grpc-max-concurrent-streams is
// what the server announces.
func TestGRPCConnectionLimit(t *testing.T) {
	lim := serve.DefaultGRPCLimits
	lim.MaxConns = 2
	grpcAddr, _, _ := startTestExtauthz(t, extauthz.RunConfig{GRPCLimits: lim})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", grpcAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	if err := check(300 * time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third connection over --grpc-max-connections=2: %v, want no answer", err)
	}
	held[0].Close()
	if err := check(hangBound); err != nil {
		t.Fatalf("after a slot freed: %v", err)
	}
}

// Bad limit values are usage errors naming their flags, all at once.
func TestLimitFlagErrors(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"extauthz", "--jwks-file", os.DevNull, "--issuer", "https://i", "--audience", "a",
		"--http-read-timeout", "0s", "--http-max-connections", "-1", "--grpc-max-concurrent-streams", "0", "--drain-period", "-1s"},
		func(string) string { return "" }, io.Discard, io.Discard)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, want := range []string{"http-read-timeout:", "http-max-connections:", "grpc-max-concurrent-streams:", "drain-period:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	err = run(context.Background(), []string{"refresher", "--store", "memory://", "--dev", "--admin-token", "0123456789abcdef0123",
		"--revocations-max-wait", "90s", "--http-idle-timeout", "0s"},
		func(string) string { return "" }, io.Discard, io.Discard)
	for _, want := range []string{"http-write-timeout: must be longer than revocations-max-wait", "http-idle-timeout:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refresher error lacks %q: %v", want, err)
		}
	}
}

// Every flag of both services has a row in its reference page (with its
// env var), so a new limit cannot ship undocumented.
func TestFlagsDocumented(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		doc      string
		register func(*flag.FlagSet)
	}{
		{"../../docs/extauthz.md", func(fs *flag.FlagSet) { new(extauthzFlags).register(fs) }},
		{"../../docs/refresher.md", func(fs *flag.FlagSet) { new(refresherFlags).register(fs) }},
	} {
		doc, err := os.ReadFile(c.doc)
		if err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		c.register(fs)
		fs.VisitAll(func(f *flag.Flag) {
			row := "| `--" + f.Name + "` | `" + envflag.Name("TOKENGATE_", f.Name) + "` |"
			if !strings.Contains(string(doc), row) {
				t.Errorf("%s has no row %q", c.doc, row)
			}
		})
	}
}
