package extauthz

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthServer is grpc.health.v1.Health computed from readiness, for the
// empty service name and envoy.service.auth.v3.Authorization.
type healthServer struct {
	healthpb.UnimplementedHealthServer
	s *Server
}

func (h *healthServer) known(service string) bool {
	return service == "" || service == "envoy.service.auth.v3.Authorization"
}

func (h *healthServer) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !h.known(req.GetService()) {
		return nil, status.Error(codes.NotFound, "unknown service")
	}
	return &healthpb.HealthCheckResponse{Status: servingStatus(h.s.Ready())}, nil
}

// Watch sends the status now and at every change. A stream costs its gRPC
// handler goroutine and nothing else: it sleeps on the hub's change channel,
// shared by all streams (60,000 idle streams once held a ticker each). The
// stream ends when the server stops (Server.EndWatches), so an open Watch
// does not hold a graceful shutdown. gRPC's own cost of an idle stream
// (about 12 KB) is bounded by Options.MaxHealthWatches: streams beyond it
// are refused with RESOURCE_EXHAUSTED.
func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	hub := h.s.health
	if n := hub.watchers.Add(1); n > hub.max {
		hub.watchers.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "more than %d health Watch streams", hub.max)
	}
	defer hub.watchers.Add(-1)
	hub.startPolling()
	known := h.known(req.GetService())
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	for {
		serving, changed, ended := hub.current()
		st := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
		if known {
			st = servingStatus(serving)
		}
		if st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-changed:
		case <-ended:
			return status.Error(codes.Unavailable, "the server is shutting down")
		case <-stream.Context().Done():
			return nil
		}
	}
}

func servingStatus(ready bool) healthpb.HealthCheckResponse_ServingStatus {
	if ready {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// healthHub holds the serving status for every Watch stream and tells
// them of changes by closing one channel. The status is recomputed where
// readiness changes (keys loaded, reload, shutdown: Server.readinessChanged)
// and, for what changes elsewhere (a revocation feed syncing or failing, a
// store going away), by one poll goroutine shared by all streams, started
// by the first Watch.
type healthHub struct {
	ready func() bool
	poll  time.Duration
	max   int64 // open Watch streams allowed

	updateMu sync.Mutex // one recomputation at a time: ready() may block on a store ping
	mu       sync.Mutex
	serving  bool
	changed  chan struct{} // closed and replaced at every change

	ended    chan struct{} // closed by end: every Watch returns
	endOnce  sync.Once
	closed   chan struct{} // closed by close: the poller exits
	closeOne sync.Once
	pollOnce sync.Once

	watchers atomic.Int64 // open Watch streams
	pollers  atomic.Int64 // poll goroutines started (at most one)
}

func newHealthHub(ready func() bool, poll time.Duration, max int) *healthHub {
	return &healthHub{
		ready: ready, poll: poll, max: int64(max),
		changed: make(chan struct{}), ended: make(chan struct{}), closed: make(chan struct{}),
	}
}

// update recomputes the status and wakes every stream if it changed.
func (h *healthHub) update() {
	h.updateMu.Lock()
	defer h.updateMu.Unlock()
	serving := h.ready()
	h.mu.Lock()
	defer h.mu.Unlock()
	if serving != h.serving {
		h.serving = serving
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// current returns the status, the channel closed at its next change, and
// the channel closed when streams must end.
func (h *healthHub) current() (serving bool, changed, ended <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.serving, h.changed, h.ended
}

// startPolling starts the one poll goroutine (first Watch only) and brings
// the status up to date for the caller.
func (h *healthHub) startPolling() {
	h.pollOnce.Do(func() {
		h.pollers.Add(1)
		go func() {
			t := time.NewTicker(h.poll)
			defer t.Stop()
			for {
				select {
				case <-h.closed:
					return
				case <-t.C:
					h.update()
				}
			}
		}()
	})
	h.update()
}

func (h *healthHub) end()   { h.endOnce.Do(func() { close(h.ended) }) }
func (h *healthHub) close() { h.closeOne.Do(func() { close(h.closed) }) }

// readinessChanged recomputes the health status now; call it wherever
// readiness may have changed.
func (s *Server) readinessChanged() { s.health.update() }

// EndWatches ends every health Watch stream, and those opened later at
// once after their first status. Call it after the drain period, just
// before the gRPC listener closes: a graceful stop waits for every stream.
func (s *Server) EndWatches() { s.health.end() }
