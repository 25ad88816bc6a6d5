package serve

import (
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// GRPCTransport is the transport side of a gRPC server's limits: streams
// per connection, the HTTP/2 handshake, connection lifetimes and
// keepalive. `tokengate extauthz` and the load harness's no-op baseline
// (test/load/noopauthz) build their servers from it, so a comparison
// between them never hides a transport difference.
type GRPCTransport struct {
	MaxConcurrentStreams  uint
	HandshakeTimeout      time.Duration
	MaxConnectionIdle     time.Duration
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	KeepaliveTime         time.Duration
	KeepaliveTimeout      time.Duration
	KeepaliveMinTime      time.Duration
}

// DefaultGRPCTransport suits a sidecar-to-service hop under load: Envoy
// keeps few long-lived HTTP/2 connections and multiplexes checks.
var DefaultGRPCTransport = GRPCTransport{
	MaxConcurrentStreams:  256,
	HandshakeTimeout:      5 * time.Second,
	MaxConnectionIdle:     5 * time.Minute,
	MaxConnectionAge:      30 * time.Minute,
	MaxConnectionAgeGrace: 30 * time.Second,
	KeepaliveTime:         time.Minute,
	KeepaliveTimeout:      20 * time.Second,
	KeepaliveMinTime:      10 * time.Second,
}

// ServerOptions are the grpc.ServerOptions for t.
func (t GRPCTransport) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.MaxConcurrentStreams(uint32(min(t.MaxConcurrentStreams, 1<<31-1))),
		grpc.MaxRecvMsgSize(1 << 20),
		grpc.ConnectionTimeout(t.HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: t.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     t.MaxConnectionIdle,
			MaxConnectionAge:      t.MaxConnectionAge,
			MaxConnectionAgeGrace: t.MaxConnectionAgeGrace,
			Time:                  t.KeepaliveTime,
			Timeout:               t.KeepaliveTimeout,
		}),
	}
}
