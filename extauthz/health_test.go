package extauthz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func openWatch(t *testing.T, conn *grpc.ClientConn, ctx context.Context) healthpb.Health_WatchClient {
	t.Helper()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func recvStatus(t *testing.T, stream healthpb.Health_WatchClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Watch.Recv: %v", err)
	}
	return resp.GetStatus()
}

// waitGoroutines waits until the goroutine count is at most want: streams
// and connections end asynchronously. Polling a condition, with a bound.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want ≤ %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// N idle Watch streams follow one shared status: one poll goroutine for
// all of them (none per stream), a change (Shutdown) reaches every stream
// through the broadcast although the poller would take an hour, and
// EndWatches ends them all, so a graceful stop does not wait for them.
// Not parallel: it counts the process's goroutines.
func TestWatchStreamsShareOneBroadcast(t *testing.T) {
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.HealthPoll = time.Hour })
	conn := startGRPC(t, h)
	// One stream first, so the connection and the poller exist in the baseline.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if st := recvStatus(t, openWatch(t, conn, ctx)); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v", st)
	}
	base := runtime.NumGoroutine()
	const n = 200
	streams := make([]healthpb.Health_WatchClient, n)
	for i := range streams {
		streams[i] = openWatch(t, conn, ctx)
		if st := recvStatus(t, streams[i]); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("stream %d: %v", i, st)
		}
	}
	if got := h.srv.health.watchers.Load(); got != n+1 {
		t.Fatalf("hub has %d watchers, want %d", got, n+1)
	}
	if got := h.srv.health.pollers.Load(); got != 1 {
		t.Fatalf("%d poll goroutines for %d streams, want 1", got, n+1)
	}
	// gRPC's own cost of a stream in this process: the server's handler
	// goroutine and the client stream's context watcher. Nothing of ours.
	if grown := runtime.NumGoroutine() - base; grown > 2*n+n/10 {
		t.Fatalf("%d goroutines for %d idle Watch streams, want ≤ 2 per stream", grown, n)
	}

	h.srv.Shutdown()
	for i, s := range streams {
		if st := recvStatus(t, s); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("stream %d after Shutdown: %v", i, st)
		}
	}
	h.srv.EndWatches()
	for i, s := range streams {
		if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("stream %d after EndWatches: %v, want Unavailable", i, err)
		}
	}
	// A Watch opened after EndWatches gets its status and ends.
	late := openWatch(t, conn, ctx)
	if st := recvStatus(t, late); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("late stream: %v", st)
	}
	if _, err := late.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("late stream: %v, want Unavailable", err)
	}
	waitGoroutines(t, base)
}

// Keys that load after start turn every Watch SERVING at once (no poll:
// the poller would take an hour).
func TestWatchFollowsKeyLoad(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	release := make(chan struct{})
	js := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks(t, k))
	}))
	t.Cleanup(js.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	h := newHarness(t, urlConfig(js.URL), func(o *Options) { o.HealthPoll = time.Hour })
	conn := startGRPC(t, h)
	stream := openWatch(t, conn, t.Context())
	if st := recvStatus(t, stream); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before keys: %v", st)
	}
	close(release)
	if st := recvStatus(t, stream); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after keys: %v", st)
	}
}

// Watch streams beyond Options.MaxHealthWatches are refused; a slot
// freed by a stream that ends is available again.
func TestWatchStreamLimit(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	h := newHarness(t, baseConfig(t, k), func(o *Options) { o.MaxHealthWatches = 2 })
	conn := startGRPC(t, h)
	ctx1, cancel1 := context.WithCancel(t.Context())
	first := openWatch(t, conn, ctx1)
	recvStatus(t, first)
	recvStatus(t, openWatch(t, conn, t.Context()))
	if _, err := openWatch(t, conn, t.Context()).Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third Watch: %v, want ResourceExhausted", err)
	}
	cancel1()
	// The slot frees once the server sees the first stream end.
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.health.watchers.Load() > 1 {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled stream still counts")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := recvStatus(t, openWatch(t, conn, t.Context())); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch after a slot freed: %v", st)
	}
}

type flipDenylist struct{ ready atomic.Bool }

func (d *flipDenylist) Revoked(string) bool { return false }
func (d *flipDenylist) Ready() bool         { return d.ready.Load() }

// Readiness that changes outside the server (the revocation feed) reaches
// Watch streams through the one shared poller.
func TestWatchFollowsDenylistByPolling(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	dl := &flipDenylist{}
	h := newHarness(t, baseConfig(t, k), func(o *Options) {
		o.Denylist = dl
		o.HealthPoll = 5 * time.Millisecond
	})
	conn := startGRPC(t, h)
	stream := openWatch(t, conn, t.Context())
	if st := recvStatus(t, stream); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("feed not ready: %v", st)
	}
	dl.ready.Store(true)
	if st := recvStatus(t, stream); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("feed ready: %v", st)
	}
	dl.ready.Store(false)
	if st := recvStatus(t, stream); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("feed lost: %v", st)
	}
}
