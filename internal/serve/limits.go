package serve

import (
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// Every listener has limits: a client that sends headers slowly, a body
// that never comes, or an idle connection is cut, and the number of
// connections a listener holds is bounded. The commands expose each limit
// as a flag; the services take them in their run configuration.

// HTTPLimits bound one HTTP listener.
type HTTPLimits struct {
	ReadHeaderTimeout time.Duration // time to read a request's headers
	ReadTimeout       time.Duration // time to read a whole request, body included
	WriteTimeout      time.Duration // from the end of the request headers to the end of the answer
	IdleTimeout       time.Duration // how long a keep-alive connection may wait for its next request
	MaxHeaderBytes    int           // largest request line plus headers
	MaxConns          int           // connections open at once; 0: no bound
}

// DefaultHTTPLimits suit small requests answered quickly (extauthz); the
// refresher raises WriteTimeout above its long poll.
var DefaultHTTPLimits = HTTPLimits{
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	WriteTimeout:      10 * time.Second,
	IdleTimeout:       2 * time.Minute,
	MaxHeaderBytes:    64 << 10,
	MaxConns:          1024,
}

// OrDefault is l, or d when l is the zero value (in-process callers such
// as tests and dev mode that set no limits).
func (l HTTPLimits) OrDefault(d HTTPLimits) HTTPLimits {
	if l == (HTTPLimits{}) {
		return d
	}
	return l
}

// Server is an http.Server serving h with these limits.
func (l HTTPLimits) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// Listener bounds ln's open connections to MaxConns.
func (l HTTPLimits) Listener(ln net.Listener) net.Listener {
	return LimitListener(ln, l.MaxConns)
}

// GRPCLimits bound a gRPC listener: the transport limits, the connection
// count and the grpc.health.v1.Health/Watch streams.
type GRPCLimits struct {
	GRPCTransport
	MaxConns         int // connections open at once; 0: no bound
	MaxHealthWatches int // open health Watch streams; more are refused
}

// DefaultGRPCLimits are extauthz's defaults.
var DefaultGRPCLimits = GRPCLimits{
	GRPCTransport:    DefaultGRPCTransport,
	MaxConns:         1024,
	MaxHealthWatches: 1024,
}

// OrDefault is l, or d when l is the zero value.
func (l GRPCLimits) OrDefault(d GRPCLimits) GRPCLimits {
	if l == (GRPCLimits{}) {
		return d
	}
	return l
}

// Server is a gRPC server with these limits and the extra options (TLS
// credentials).
func (l GRPCLimits) Server(extra ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(l.ServerOptions(), extra...)...)
}

// Listener bounds ln's open connections to MaxConns.
func (l GRPCLimits) Listener(ln net.Listener) net.Listener {
	return LimitListener(ln, l.MaxConns)
}
