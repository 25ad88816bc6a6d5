package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

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

// grpcLimits bound the gRPC listener of extauthz.
type grpcLimits struct {
	maxConns              int
	maxConcurrentStreams  uint
	maxHealthWatches      int
	handshakeTimeout      time.Duration
	maxConnectionIdle     time.Duration
	maxConnectionAge      time.Duration
	maxConnectionAgeGrace time.Duration
	keepaliveTime         time.Duration
	keepaliveTimeout      time.Duration
	keepaliveMinTime      time.Duration
}

var defaultGRPCLimits = grpcLimits{
	maxConns:              1024,
	maxConcurrentStreams:  256,
	maxHealthWatches:      1024,
	handshakeTimeout:      5 * time.Second,
	maxConnectionIdle:     5 * time.Minute,
	maxConnectionAge:      30 * time.Minute,
	maxConnectionAgeGrace: 30 * time.Second,
	keepaliveTime:         time.Minute,
	keepaliveTimeout:      20 * time.Second,
	keepaliveMinTime:      10 * time.Second,
}

func (l *grpcLimits) register(fs *flag.FlagSet, d grpcLimits) {
	fs.IntVar(&l.maxConns, "grpc-max-connections", d.maxConns, "gRPC: connections open at once; more wait in the accept queue (0: no limit)")
	fs.UintVar(&l.maxConcurrentStreams, "grpc-max-concurrent-streams", d.maxConcurrentStreams, "gRPC: streams (checks, health watches) in flight per connection")
	fs.IntVar(&l.maxHealthWatches, "grpc-max-health-watches", d.maxHealthWatches, "gRPC: open grpc.health.v1.Health/Watch streams; more are refused (RESOURCE_EXHAUSTED)")
	fs.DurationVar(&l.handshakeTimeout, "grpc-handshake-timeout", d.handshakeTimeout, "gRPC: time for a new connection to complete its HTTP/2 preface")
	fs.DurationVar(&l.maxConnectionIdle, "grpc-max-connection-idle", d.maxConnectionIdle, "gRPC: a connection without streams for this long is closed (GOAWAY)")
	fs.DurationVar(&l.maxConnectionAge, "grpc-max-connection-age", d.maxConnectionAge, "gRPC: a connection is asked to go away after this long (±10%), so clients rebalance")
	fs.DurationVar(&l.maxConnectionAgeGrace, "grpc-max-connection-age-grace", d.maxConnectionAgeGrace, "gRPC: after --grpc-max-connection-age, time for streams in flight before the connection is cut")
	fs.DurationVar(&l.keepaliveTime, "grpc-keepalive-time", d.keepaliveTime, "gRPC: ping a connection quiet for this long")
	fs.DurationVar(&l.keepaliveTimeout, "grpc-keepalive-timeout", d.keepaliveTimeout, "gRPC: close a connection whose ping is not answered within this")
	fs.DurationVar(&l.keepaliveMinTime, "grpc-keepalive-min-time", d.keepaliveMinTime, "gRPC: clients pinging more often than this are disconnected (ENHANCE_YOUR_CALM)")
}

func (l grpcLimits) problems() []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"grpc-handshake-timeout", l.handshakeTimeout}, {"grpc-max-connection-idle", l.maxConnectionIdle},
		{"grpc-max-connection-age", l.maxConnectionAge}, {"grpc-max-connection-age-grace", l.maxConnectionAgeGrace},
		{"grpc-keepalive-time", l.keepaliveTime}, {"grpc-keepalive-timeout", l.keepaliveTimeout}, {"grpc-keepalive-min-time", l.keepaliveMinTime},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", d.name, d.v))
		}
	}
	if l.maxHealthWatches < 1 {
		errs = append(errs, fmt.Errorf("grpc-max-health-watches: must be at least 1, got %d", l.maxHealthWatches))
	}
	if l.maxConcurrentStreams == 0 {
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

// server is a gRPC server with these limits, tuned for a sidecar-to-service
// hop under load: Envoy keeps few long-lived HTTP/2 connections and
// multiplexes checks.
func (l grpcLimits) server() *grpc.Server {
	return grpc.NewServer(
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.MaxConcurrentStreams(uint32(min(l.maxConcurrentStreams, 1<<31-1))),
		grpc.MaxRecvMsgSize(1<<20),
		grpc.ConnectionTimeout(l.handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     l.maxConnectionIdle,
			MaxConnectionAge:      l.maxConnectionAge,
			MaxConnectionAgeGrace: l.maxConnectionAgeGrace,
			Time:                  l.keepaliveTime,
			Timeout:               l.keepaliveTimeout,
		}),
	)
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
