package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var testClient = &http.Client{Transport: &http.Transport{}}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// An HTTP request in flight when the context ends still gets its answer,
// and the listener stops accepting afterwards. The request is released
// only once shutdown has begun (the server's RegisterOnShutdown hook runs
// after its listeners are closed): a server that closed connections
// instead of draining them (Close for Shutdown) cuts the request first.
func TestHTTPFinishesInFlight(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})}
	shuttingDown := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(shuttingDown) })
	g := New(Options{})
	g.HTTP(srv, ln)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Run(ctx) }()

	got := make(chan string, 1)
	go func() {
		resp, err := testClient.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-entered
	cancel()
	select {
	case <-shuttingDown:
	case body := <-got:
		close(release)
		t.Fatalf("the in-flight request ended before a graceful shutdown began: %q", body)
	case err := <-served:
		close(release)
		t.Fatalf("Run returned with a request in flight: %v", err)
	}
	close(release)
	if body := <-got; body != "done" {
		t.Fatalf("in-flight request got %q, want done", body)
	}
	if err := <-served; err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("listener still accepts after shutdown")
	}
}

func TestGRPCStopsOnCancel(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	g := New(Options{})
	g.GRPC(s, ln)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Run(ctx) }()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before stop: %v %v", resp, err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// The phases come in order: OnDrain, then the servers keep answering for
// the drain period (a request made at its end is served, with Connection:
// close), then OnStop, then the listeners close.
func TestDrainOrder(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	get := func() string {
		resp, err := testClient.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			return "error"
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.Close {
			return string(b) + ", Connection: close"
		}
		return string(b)
	}
	const drain = 50 * time.Millisecond
	var drained, stopped time.Time
	var duringDrain, atStop string
	var order atomic.Int32
	g := New(Options{
		DrainPeriod: drain,
		OnDrain: func() {
			order.CompareAndSwap(0, 1)
			drained = time.Now()
			duringDrain = get()
		},
		OnStop: func() {
			order.CompareAndSwap(1, 2)
			stopped = time.Now()
			atStop = get()
		},
	})
	g.HTTP(srv, ln)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Run(ctx) }()
	if got := get(); got != "ok" {
		t.Fatalf("before: %q", got)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if order.Load() != 2 {
		t.Fatal("OnDrain and OnStop not called in order")
	}
	// Served, and keep-alive ends after each answer.
	if want := "ok, Connection: close"; duringDrain != want || atStop != want {
		t.Fatalf("requests during the drain period: %q, %q; want %q", duringDrain, atStop, want)
	}
	// A timer never fires early: this lower bound is not a timing guess.
	if d := stopped.Sub(drained); d < drain {
		t.Fatalf("OnStop came %v after OnDrain, before the %v drain period ended", d, drain)
	}
	if get() != "error" {
		t.Fatal("listener still accepts after shutdown")
	}
}

// A server that fails stops the group: Run returns its error.
func TestServeErrorStopsGroup(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	bad := listen(t)
	bad.Close()
	g := New(Options{DrainPeriod: time.Hour})
	g.HTTP(&http.Server{Handler: http.NotFoundHandler()}, ln)
	g.HTTP(&http.Server{Handler: http.NotFoundHandler()}, bad)
	err := g.Run(context.Background())
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run = %v, want the closed listener's error", err)
	}
}

// LimitListener holds connections beyond the bound in the accept queue:
// the third connection is served only after one of the first two closes.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	ln := LimitListener(listen(t), 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	// Not accepted: a bounded look, which cannot fail on a correct limit.
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted over the limit of 2")
	case <-time.After(100 * time.Millisecond):
	}
	// Closing one accepted connection frees a slot for the waiting one.
	first.Close()
	third := <-accepted
	third.Close()
	second.Close()
}
