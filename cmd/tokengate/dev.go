package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/devmode"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/refresher"
)

// runDev runs the refresher and extauthz in one process on embedded
// defaults (internal/devmode): a bolt store, signing key and admin token
// under --dir, extauthz trusting the refresher's key and denying revoked
// sessions. It prints a walkthrough with curl commands that work as printed.
func runDev(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = envflag.Usage(fs, "TOKENGATE_")
	// The refresher half: the refresher's own flags with dev defaults.
	var rf refresherFlags
	rf.register(flag.NewFlagSet("refresher", flag.ContinueOnError))
	rf.dev = true
	rf.audience = devmode.Audience
	rf.run.DrainPeriod = 0 // no load balancer to drain in dev: Ctrl-C stops at once
	ea := extauthz.RunDefaults()
	ea.Reflection, ea.DrainPeriod = true, 0
	var dir, logLevel string
	fs.StringVar(&rf.run.Listen, "listen", rf.run.Listen, "refresher HTTP address")
	fs.StringVar(&ea.GRPCListen, "grpc-listen", ea.GRPCListen, "extauthz gRPC address")
	fs.StringVar(&ea.HTTPListen, "http-listen", ea.HTTPListen, "extauthz HTTP (forward-auth) address")
	fs.StringVar(&dir, "dir", devmode.Dir, "directory for the bolt store, signing key and admin token")
	fs.StringVar(&logLevel, "log-level", "warn", "log level (logs go to stderr, the walkthrough to stdout)")
	fs.StringVar(&rf.cors, "cors-allowed-origins", "", "browser origins allowed to call /v1/token and /v1/revoke")
	fs.StringVar(&rf.transport, "refresh-token-transport", rf.transport, "body, cookie or both")
	fs.DurationVar(&rf.cfg.AccessTTL, "access-ttl", rf.cfg.AccessTTL, "access-token lifetime")
	fs.DurationVar(&rf.cfg.ReuseGrace, "reuse-grace", rf.cfg.ReuseGrace, "reuse grace window")
	if done, err := parseFlags(fs, e); done || err != nil {
		return err
	}
	log, err := newLogger(e.stderr, logLevel)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	rf.store = "bolt://" + filepath.Join(dir, "tokengate.db")
	// Bind first: the issuer is the address the refresher really has.
	rln, err := net.Listen("tcp", rf.run.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	refresherURL := devmode.LocalURL(rln.Addr())
	rf.issuer = refresherURL
	rs, err := rf.build(ctx, log.With("service", "refresher"), prometheus.NewRegistry())
	if err != nil {
		rln.Close()
		return err
	}
	defer rs.opts.Store.Close()
	rs.run.Listener = rln

	// The extauthz half trusts the refresher's keys (inline: no fetch from
	// ourselves before we listen) and asks the store about revocations.
	jwks, err := rs.opts.Keys.PublicJSON()
	if err != nil {
		rln.Close()
		return err
	}
	cfg := extauthz.Config{Providers: []extauthz.Provider{{Issuer: rs.cfg.Issuer, Audiences: rs.cfg.Audience, JWKS: jwks}}}
	if err := cfg.Validate(); err != nil {
		rln.Close()
		return fmt.Errorf("dev extauthz config: %w", err)
	}
	ea.OnListening = func(grpcAddr, httpAddr net.Addr) {
		devmode.Walkthrough{
			Refresher: refresherURL, GRPC: devmode.LocalAddr(grpcAddr), HTTP: devmode.LocalURL(httpAddr),
			Dir: dir, AdminTokenFile: rs.adminTokenPath,
		}.Print(e.stdout)
	}
	ea.Getenv, rs.run.Getenv = e.getenv, e.getenv // OTEL_* (tracing)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return refresher.Run(gctx, rs.cfg, rs.run, rs.opts) })
	g.Go(func() error {
		return extauthz.Run(gctx, cfg, ea, extauthz.Options{
			Logger: log.With("service", "extauthz"), Registry: prometheus.NewRegistry(),
			Denylist: devmode.StoreDenylist{Store: rs.opts.Store},
		})
	})
	return g.Wait()
}
