package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/tokengate/tokengate/internal/serve"
)

// Every listener has limits, each a flag of `tokengate extauthz` and
// `tokengate refresher` (same names, same env vars): a client that sends
// headers slowly, a body that never comes, or an idle connection is cut,
// and the number of connections a listener holds is bounded.

// httpLimits bound one HTTP listener.
type httpLimits struct {
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
	maxConns          int
}

// defaultHTTPLimits suit extauthz (small requests, answers in
// microseconds); the refresher raises writeTimeout above its long poll.
var defaultHTTPLimits = httpLimits{
	readHeaderTimeout: 5 * time.Second,
	readTimeout:       10 * time.Second,
	writeTimeout:      10 * time.Second,
	idleTimeout:       2 * time.Minute,
	maxHeaderBytes:    64 << 10,
	maxConns:          1024,
}

func (l *httpLimits) register(fs *flag.FlagSet, d httpLimits) {
	fs.DurationVar(&l.readHeaderTimeout, "http-read-header-timeout", d.readHeaderTimeout, "HTTP: time to read a request's headers")
	fs.DurationVar(&l.readTimeout, "http-read-timeout", d.readTimeout, "HTTP: time to read a whole request, body included")
	fs.DurationVar(&l.writeTimeout, "http-write-timeout", d.writeTimeout, "HTTP: time from the end of the request headers to the end of the answer")
	fs.DurationVar(&l.idleTimeout, "http-idle-timeout", d.idleTimeout, "HTTP: how long a keep-alive connection may wait for its next request")
	fs.IntVar(&l.maxHeaderBytes, "http-max-header-bytes", d.maxHeaderBytes, "HTTP: largest request line plus headers, in bytes")
	fs.IntVar(&l.maxConns, "http-max-connections", d.maxConns, "HTTP: connections open at once; more wait in the accept queue (0: no limit)")
}

// problems lists every bad value, named by its flag.
func (l httpLimits) problems() []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"http-read-header-timeout", l.readHeaderTimeout}, {"http-read-timeout", l.readTimeout}, {"http-write-timeout", l.writeTimeout}, {"http-idle-timeout", l.idleTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", d.name, d.v))
		}
	}
	if l.maxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("http-max-header-bytes: must be at least 1024, got %d", l.maxHeaderBytes))
	}
	if l.maxConns < 0 {
		errs = append(errs, fmt.Errorf("http-max-connections: must be 0 (no limit) or more, got %d", l.maxConns))
	}
	return errs
}

// orDefault is l, or d where l is the zero value (in-process callers such
// as tests and `tokengate dev` that set no limits).
func (l httpLimits) orDefault(d httpLimits) httpLimits {
	if l == (httpLimits{}) {
		return d
	}
	return l
}

// server is an http.Server with these limits.
func (l httpLimits) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.readHeaderTimeout,
		ReadTimeout:       l.readTimeout,
		WriteTimeout:      l.writeTimeout,
		IdleTimeout:       l.idleTimeout,
		MaxHeaderBytes:    l.maxHeaderBytes,
	}
}

// listener bounds ln's open connections.
func (l httpLimits) listener(ln net.Listener) net.Listener {
	return serve.LimitListener(ln, l.maxConns)
}

// grpcLimits bound the gRPC listener of extauthz: the transport limits
// (shared with the load harness's no-op baseline through internal/serve),
// the connection count and the health Watch streams.
type grpcLimits struct {
	serve.GRPCTransport
	maxConns         int
	maxHealthWatches int
}

var defaultGRPCLimits = grpcLimits{
	GRPCTransport:    serve.DefaultGRPCTransport,
	maxConns:         1024,
	maxHealthWatches: 1024,
}

func (l *grpcLimits) register(fs *flag.FlagSet, d grpcLimits) {
	fs.IntVar(&l.maxConns, "grpc-max-connections", d.maxConns, "gRPC: connections open at once; more wait in the accept queue (0: no limit)")
	fs.UintVar(&l.MaxConcurrentStreams, "grpc-max-concurrent-streams", d.MaxConcurrentStreams, "gRPC: streams (checks, health watches) in flight per connection")
	fs.IntVar(&l.maxHealthWatches, "grpc-max-health-watches", d.maxHealthWatches, "gRPC: open grpc.health.v1.Health/Watch streams; more are refused (RESOURCE_EXHAUSTED)")
	fs.DurationVar(&l.HandshakeTimeout, "grpc-handshake-timeout", d.HandshakeTimeout, "gRPC: time for a new connection to complete its HTTP/2 preface")
	fs.DurationVar(&l.MaxConnectionIdle, "grpc-max-connection-idle", d.MaxConnectionIdle, "gRPC: a connection without streams for this long is closed (GOAWAY)")
	fs.DurationVar(&l.MaxConnectionAge, "grpc-max-connection-age", d.MaxConnectionAge, "gRPC: a connection is asked to go away after this long (±10%), so clients rebalance")
	fs.DurationVar(&l.MaxConnectionAgeGrace, "grpc-max-connection-age-grace", d.MaxConnectionAgeGrace, "gRPC: after --grpc-max-connection-age, time for streams in flight before the connection is cut")
	fs.DurationVar(&l.KeepaliveTime, "grpc-keepalive-time", d.KeepaliveTime, "gRPC: ping a connection quiet for this long")
	fs.DurationVar(&l.KeepaliveTimeout, "grpc-keepalive-timeout", d.KeepaliveTimeout, "gRPC: close a connection whose ping is not answered within this")
	fs.DurationVar(&l.KeepaliveMinTime, "grpc-keepalive-min-time", d.KeepaliveMinTime, "gRPC: clients pinging more often than this are disconnected (ENHANCE_YOUR_CALM)")
}

func (l grpcLimits) problems() []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"grpc-handshake-timeout", l.HandshakeTimeout}, {"grpc-max-connection-idle", l.MaxConnectionIdle},
		{"grpc-max-connection-age", l.MaxConnectionAge}, {"grpc-max-connection-age-grace", l.MaxConnectionAgeGrace},
		{"grpc-keepalive-time", l.KeepaliveTime}, {"grpc-keepalive-timeout", l.KeepaliveTimeout}, {"grpc-keepalive-min-time", l.KeepaliveMinTime},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", d.name, d.v))
		}
	}
	if l.maxHealthWatches < 1 {
		errs = append(errs, fmt.Errorf("grpc-max-health-watches: must be at least 1, got %d", l.maxHealthWatches))
	}
	if l.MaxConcurrentStreams == 0 {
		errs = append(errs, errors.New("grpc-max-concurrent-streams: must be at least 1"))
	}
	if l.maxConns < 0 {
		errs = append(errs, fmt.Errorf("grpc-max-connections: must be 0 (no limit) or more, got %d", l.maxConns))
	}
	return errs
}

func (l grpcLimits) orDefault(d grpcLimits) grpcLimits {
	if l == (grpcLimits{}) {
		return d
	}
	return l
}

// server is a gRPC server with these limits.
func (l grpcLimits) server() *grpc.Server {
	return grpc.NewServer(l.ServerOptions()...)
}

func (l grpcLimits) listener(ln net.Listener) net.Listener {
	return serve.LimitListener(ln, l.maxConns)
}

// shutdownFlags say how a service stops after SIGTERM.
type shutdownFlags struct {
	drainPeriod time.Duration
	grace       time.Duration
}

func (s *shutdownFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&s.drainPeriod, "drain-period", 5*time.Second, "after SIGTERM, keep serving this long with readiness NOT_SERVING (/readyz 503) so load balancers stop sending, then close the listeners")
	fs.DurationVar(&s.grace, "shutdown-grace", serve.DefaultGrace, "after the drain period, how long requests in flight may take before they are cut")
}

func (s shutdownFlags) problems() []error {
	var errs []error
	if s.drainPeriod < 0 {
		errs = append(errs, fmt.Errorf("drain-period: must be 0 or more, got %v", s.drainPeriod))
	}
	if s.grace <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-grace: must be positive, got %v", s.grace))
	}
	return errs
}
