package extauthz

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"

	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tracing"
)

// RunConfig says how Run serves: the listeners, their limits, the
// shutdown timing and where a reload comes from. The policy itself is the
// Config.
type RunConfig struct {
	// GRPCListen and HTTPListen are the listen addresses (":0" picks a free
	// port).
	GRPCListen, HTTPListen string
	// Reflection serves gRPC reflection (for grpcurl).
	Reflection bool
	// TLS, when set, serves both listeners over TLS with its certificate
	// (reloaded when the files change) and, with a client CA, requires a
	// verified client certificate (mutual TLS). nil serves plaintext.
	TLS *tlsfiles.Reloader
	// HTTPLimits and GRPCLimits bound the listeners; zero values are
	// RunDefaults' limits.
	HTTPLimits serve.HTTPLimits
	GRPCLimits serve.GRPCLimits
	// DrainPeriod: after ctx ends, health NOT_SERVING for this long before
	// the listeners close. Grace bounds the checks in flight after that
	// (0: serve.DefaultGrace).
	DrainPeriod, Grace time.Duration
	// Reload, when set, is called on SIGHUP for the new config; a config
	// that fails is logged and the running one kept. Without it SIGHUP is
	// logged and ignored (never the default action, exit).
	Reload func() (Config, error)
	// OnListening is called once both listeners are bound.
	OnListening func(grpcAddr, httpAddr net.Addr)
	// Getenv reads the OTEL_* variables that turn tracing on
	// (internal/tracing); nil is tracing off. The command passes os.Getenv.
	Getenv func(string) string
}

// RunDefaults are the documented listen addresses, limits and shutdown
// timing.
func RunDefaults() RunConfig {
	return RunConfig{
		GRPCListen:  ":9001",
		HTTPListen:  ":9002",
		HTTPLimits:  serve.DefaultHTTPLimits,
		GRPCLimits:  serve.DefaultGRPCLimits,
		DrainPeriod: 5 * time.Second,
		Grace:       serve.DefaultGrace,
	}
}

// feed is a Denylist that fetches in the background (RevocationFeed).
type feed interface {
	Denylist
	Run(ctx context.Context) error
}

var _ feed = (*RevocationFeed)(nil)

// Run serves cfg until ctx ends, then shuts down in the order load
// balancers need (serve.Group): health turns NOT_SERVING, both listeners
// keep serving for the drain period, health Watch streams end, the
// listeners close, and checks in flight finish. SIGHUP reloads the config
// through rc.Reload. A Denylist that fetches in the background (a
// RevocationFeed) runs for as long as the servers do.
// opts.MaxHealthWatches defaults to rc.GRPCLimits.MaxHealthWatches.
func Run(ctx context.Context, cfg Config, rc RunConfig, opts Options) error {
	d := RunDefaults()
	httpLim := rc.HTTPLimits.OrDefault(d.HTTPLimits)
	grpcLim := rc.GRPCLimits.OrDefault(d.GRPCLimits)
	if opts.MaxHealthWatches == 0 {
		opts.MaxHealthWatches = grpcLim.MaxHealthWatches
	}
	tp, err := tracing.Setup(ctx, "tokengate-extauthz", rc.Getenv, opts.Logger)
	if err != nil {
		return err
	}
	defer tp.Close()
	if opts.Tracer == nil {
		opts.Tracer = tp.Tracer(instrumentationName)
	}
	if f, ok := opts.Denylist.(*RevocationFeed); ok && f.cfg.Tracer == nil {
		f.cfg.Tracer = opts.Tracer // before the feed runs
	}
	srv, err := NewServer(cfg, opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	log := srv.log

	grpcLn, err := net.Listen("tcp", rc.GRPCListen)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", rc.HTTPListen)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("http listen: %w", err)
	}
	var creds []grpc.ServerOption
	var httpTLS *tls.Config
	if rc.TLS != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(rc.TLS.ServerConfig("h2"))))
		httpTLS = rc.TLS.ServerConfig("h2", "http/1.1")
	}
	gs := grpcLim.Server(creds...)
	srv.RegisterGRPC(gs)
	if rc.Reflection {
		reflection.Register(gs)
	}
	log.Info("extauthz listening", "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String(), "tls", rc.TLS != nil, "providers", len(cfg.Providers))
	if rc.OnListening != nil {
		rc.OnListening(grpcLn.Addr(), httpLn.Addr())
	}

	group := serve.New(serve.Options{
		DrainPeriod: rc.DrainPeriod, Grace: rc.Grace, Logger: log,
		OnDrain: func() {
			log.Info("extauthz shutting down: health NOT_SERVING, finishing checks in flight", "drain_period", rc.DrainPeriod.String())
			srv.Shutdown()
		},
		OnStop: srv.EndWatches,
	})
	group.GRPC(gs, grpcLim.Listener(grpcLn))
	group.HTTP(httpLim.Server(srv.Routes()), serve.TLSListener(httpLim.Listener(httpLn), httpTLS))

	if f, ok := opts.Denylist.(feed); ok {
		// /readyz waits for the feed's first load.
		feedCtx, stopFeed := context.WithCancel(ctx)
		feedDone := make(chan struct{})
		go func() {
			defer close(feedDone)
			_ = f.Run(feedCtx) // it returns when feedCtx ends
		}()
		defer func() {
			stopFeed()
			<-feedDone
		}()
	}

	// SIGHUP is always caught: without a Reload there is nothing to
	// reload, and the default action (exit) would be a surprise.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	served := make(chan error, 1)
	go func() { served <- group.Run(ctx) }()
	for {
		select {
		case err := <-served:
			return err
		case <-hup:
			reloadConfig(ctx, srv, rc.Reload)
		}
	}
}

// reloadConfig applies the config load returns, or keeps the running one.
func reloadConfig(ctx context.Context, srv *Server, load func() (Config, error)) {
	if load == nil {
		srv.log.Info("config reload skipped: no config file (SIGHUP ignored)")
		return
	}
	cfg, err := load()
	if err == nil {
		err = srv.Reload(ctx, cfg)
	}
	if err != nil {
		srv.log.Warn("config reload refused; keeping the running config", "error", err.Error())
		return
	}
	srv.log.Info("config reloaded", "providers", len(cfg.Providers))
}
