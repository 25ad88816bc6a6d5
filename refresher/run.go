package refresher

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tracing"
)

// RunConfig says how Run serves: the listener, its limits, the shutdown
// timing and where a key reload comes from. The token behaviour itself is
// the Config.
type RunConfig struct {
	// Listen is the listen address (":0" picks a free port). Listener,
	// when set, is used instead (dev mode binds first to learn its issuer).
	Listen   string
	Listener net.Listener
	// HTTPLimits bound the listener; the zero value is HTTPLimitsFor the
	// Config's RevocationsMaxWait.
	HTTPLimits serve.HTTPLimits
	// TLS, when set, serves the listener over TLS with its certificate
	// (reloaded when the files change) and, with a client CA, requires a
	// verified client certificate (mutual TLS). nil serves plaintext.
	TLS *tlsfiles.Reloader
	// DrainPeriod: after ctx ends, /readyz answers 503 for this long while
	// requests are still served; then the listener closes. Grace bounds the
	// requests in flight after that (0: serve.DefaultGrace).
	DrainPeriod, Grace time.Duration
	// SigningKeyFile, when set, is re-read on SIGHUP (SigningKeyID picks
	// the active signer), so a signer switch or a newly published key needs
	// no restart. A file that fails to load is logged and the running keys
	// are kept.
	SigningKeyFile, SigningKeyID string
	// OnListening is called once the listener is bound.
	OnListening func(addr net.Addr)
	// Getenv reads the OTEL_* variables that turn tracing on
	// (internal/tracing); nil is tracing off. The command passes os.Getenv.
	Getenv func(string) string
}

// RunDefaults are the documented listen address, limits and shutdown
// timing.
func RunDefaults() RunConfig {
	return RunConfig{
		Listen:      ":8080",
		HTTPLimits:  HTTPLimitsFor(Defaults().RevocationsMaxWait),
		DrainPeriod: 5 * time.Second,
		Grace:       serve.DefaultGrace,
	}
}

// HTTPLimitsFor are serve.DefaultHTTPLimits with a write timeout longer
// than the longest /v1/revocations long poll.
func HTTPLimitsFor(revocationsMaxWait time.Duration) serve.HTTPLimits {
	l := serve.DefaultHTTPLimits
	l.WriteTimeout = revocationsMaxWait + 15*time.Second
	return l
}

// Run serves the refresher until ctx ends, then shuts down through
// serve.Group: /readyz answers 503 for the drain period, long polls
// answer at once, the listener closes and requests in flight finish.
// Meanwhile it prunes the store every PruneInterval (RunPruner)
// and reloads rc.SigningKeyFile on SIGHUP. opts.Store stays open: the
// caller closes it.
func Run(ctx context.Context, cfg Config, rc RunConfig, opts Options) error {
	tp, err := tracing.Setup(ctx, "tokengate-refresher", rc.Getenv, opts.Logger)
	if err != nil {
		return err
	}
	defer tp.Close()
	if opts.Tracer == nil {
		opts.Tracer = tp.Tracer(instrumentationName)
	}
	srv, err := NewServer(cfg, opts)
	if err != nil {
		return err
	}
	log := srv.log
	ln := rc.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", rc.Listen); err != nil {
			return fmt.Errorf("listen %s: %w", rc.Listen, err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go srv.RunPruner(runCtx, PruneInterval)
	if rc.SigningKeyFile != "" {
		go reloadKeysOnHUP(runCtx, srv, rc.SigningKeyFile, rc.SigningKeyID)
	}
	group := serve.New(serve.Options{
		DrainPeriod: rc.DrainPeriod, Grace: rc.Grace, Logger: log,
		// /readyz answers 503 from SIGTERM on, while requests are still served.
		OnDrain: func() {
			log.Info("refresher draining", "drain_period", rc.DrainPeriod.String())
			srv.Shutdown()
		},
		// Long polls answer at once so they do not hold the shutdown.
		OnStop: srv.Drain,
	})
	lim := rc.HTTPLimits.OrDefault(HTTPLimitsFor(srv.cfg.RevocationsMaxWait))
	var tlsCfg *tls.Config
	if rc.TLS != nil {
		tlsCfg = rc.TLS.ServerConfig("h2", "http/1.1")
	}
	group.HTTP(lim.Server(srv.Routes()), serve.TLSListener(lim.Listener(ln), tlsCfg))
	log.Info("refresher listening", "addr", ln.Addr().String(), "tls", rc.TLS != nil)
	if rc.OnListening != nil {
		rc.OnListening(ln.Addr())
	}
	return group.Run(ctx)
}

// reloadKeysOnHUP re-reads the key file on each SIGHUP until ctx ends.
func reloadKeysOnHUP(ctx context.Context, srv *Server, path, kid string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			keys, err := keyset.Load(path, kid)
			if err == nil {
				err = srv.SetKeys(keys)
			}
			if err != nil {
				srv.log.Warn("signing key reload failed", "error", err.Error())
				continue
			}
			srv.log.Info("signing keys reloaded", "kid", keys.SignerKID(), "published", keys.Public.Len())
		}
	}
}
