package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/internal/tlsfiles"
)

// Every listener has limits (serve.HTTPLimits, serve.GRPCLimits), each a
// flag of `tokengate extauthz` and `tokengate refresher` (same names, same
// env vars). This file names them and checks their values.

func registerHTTPLimits(fs *flag.FlagSet, l *serve.HTTPLimits, d serve.HTTPLimits) {
	fs.DurationVar(&l.ReadHeaderTimeout, "http-read-header-timeout", d.ReadHeaderTimeout, "HTTP: time to read a request's headers")
	fs.DurationVar(&l.ReadTimeout, "http-read-timeout", d.ReadTimeout, "HTTP: time to read a whole request, body included")
	fs.DurationVar(&l.WriteTimeout, "http-write-timeout", d.WriteTimeout, "HTTP: time from the end of the request headers to the end of the answer")
	fs.DurationVar(&l.IdleTimeout, "http-idle-timeout", d.IdleTimeout, "HTTP: how long a keep-alive connection may wait for its next request")
	fs.IntVar(&l.MaxHeaderBytes, "http-max-header-bytes", d.MaxHeaderBytes, "HTTP: largest request line plus headers, in bytes")
	fs.IntVar(&l.MaxConns, "http-max-connections", d.MaxConns, "HTTP: connections open at once; more wait in the accept queue (0: no limit)")
}

// httpLimitProblems lists every bad value, named by its flag.
func httpLimitProblems(l serve.HTTPLimits) []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"http-read-header-timeout", l.ReadHeaderTimeout}, {"http-read-timeout", l.ReadTimeout}, {"http-write-timeout", l.WriteTimeout}, {"http-idle-timeout", l.IdleTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", d.name, d.v))
		}
	}
	if l.MaxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("http-max-header-bytes: must be at least 1024, got %d", l.MaxHeaderBytes))
	}
	if l.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("http-max-connections: must be 0 (no limit) or more, got %d", l.MaxConns))
	}
	return errs
}

func registerGRPCLimits(fs *flag.FlagSet, l *serve.GRPCLimits, d serve.GRPCLimits) {
	fs.IntVar(&l.MaxConns, "grpc-max-connections", d.MaxConns, "gRPC: connections open at once; more wait in the accept queue (0: no limit)")
	fs.UintVar(&l.MaxConcurrentStreams, "grpc-max-concurrent-streams", d.MaxConcurrentStreams, "gRPC: streams (checks, health watches) in flight per connection")
	fs.IntVar(&l.MaxHealthWatches, "grpc-max-health-watches", d.MaxHealthWatches, "gRPC: open grpc.health.v1.Health/Watch streams; more are refused (RESOURCE_EXHAUSTED)")
	fs.DurationVar(&l.HandshakeTimeout, "grpc-handshake-timeout", d.HandshakeTimeout, "gRPC: time for a new connection to complete its HTTP/2 preface")
	fs.DurationVar(&l.MaxConnectionIdle, "grpc-max-connection-idle", d.MaxConnectionIdle, "gRPC: a connection without streams for this long is closed (GOAWAY)")
	fs.DurationVar(&l.MaxConnectionAge, "grpc-max-connection-age", d.MaxConnectionAge, "gRPC: a connection is asked to go away after this long (±10%), so clients rebalance")
	fs.DurationVar(&l.MaxConnectionAgeGrace, "grpc-max-connection-age-grace", d.MaxConnectionAgeGrace, "gRPC: after --grpc-max-connection-age, time for streams in flight before the connection is cut")
	fs.DurationVar(&l.KeepaliveTime, "grpc-keepalive-time", d.KeepaliveTime, "gRPC: ping a connection quiet for this long")
	fs.DurationVar(&l.KeepaliveTimeout, "grpc-keepalive-timeout", d.KeepaliveTimeout, "gRPC: close a connection whose ping is not answered within this")
	fs.DurationVar(&l.KeepaliveMinTime, "grpc-keepalive-min-time", d.KeepaliveMinTime, "gRPC: clients pinging more often than this are disconnected (ENHANCE_YOUR_CALM)")
}

func grpcLimitProblems(l serve.GRPCLimits) []error {
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
	if l.MaxHealthWatches < 1 {
		errs = append(errs, fmt.Errorf("grpc-max-health-watches: must be at least 1, got %d", l.MaxHealthWatches))
	}
	if l.MaxConcurrentStreams == 0 {
		errs = append(errs, errors.New("grpc-max-concurrent-streams: must be at least 1"))
	}
	if l.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("grpc-max-connections: must be 0 (no limit) or more, got %d", l.MaxConns))
	}
	return errs
}

// registerShutdown registers how a service stops after SIGTERM.
func registerShutdown(fs *flag.FlagSet, drainPeriod, grace *time.Duration, d time.Duration) {
	fs.DurationVar(drainPeriod, "drain-period", d, "after SIGTERM, keep serving this long with readiness NOT_SERVING (/readyz 503) so load balancers stop sending, then close the listeners")
	fs.DurationVar(grace, "shutdown-grace", serve.DefaultGrace, "after the drain period, how long requests in flight may take before they are cut")
}

func shutdownProblems(drainPeriod, grace time.Duration) []error {
	var errs []error
	if drainPeriod < 0 {
		errs = append(errs, fmt.Errorf("drain-period: must be 0 or more, got %v", drainPeriod))
	}
	if grace <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-grace: must be positive, got %v", grace))
	}
	return errs
}

// registerTLS registers the TLS files of the listeners: the same three
// flags on both services, applying to every listener of the service
// (extauthz's gRPC and HTTP listeners share one certificate; /metrics is
// on the HTTP listener).
func registerTLS(fs *flag.FlagSet, f *tlsfiles.Files) {
	fs.StringVar(&f.CertFile, "tls-cert-file", "", "serve every listener over TLS with this PEM certificate (chain, leaf first); re-read when the file changes, no restart")
	fs.StringVar(&f.KeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&f.ClientCAFile, "tls-client-ca-file", "", "mutual TLS: require a client certificate signed by one of the PEM CAs in this file (re-read when it changes)")
}

// tlsProblems lists every missing TLS file, named by its flag.
func tlsProblems(f tlsfiles.Files) []error { return f.Problems("tls-") }

// newTLS loads the TLS files; nil (plaintext) when none is set.
func newTLS(f tlsfiles.Files, log *slog.Logger) (*tlsfiles.Reloader, error) {
	if !f.Enabled() {
		return nil, nil
	}
	r, err := tlsfiles.New(f, tlsfiles.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return r, nil
}
