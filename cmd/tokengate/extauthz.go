package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/devmode"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/tlsfiles"
)

// extauthzFlags are the flags of `tokengate extauthz` (each also TOKENGATE_<FLAG>).
type extauthzFlags struct {
	config                string
	jwksURL, jwksFile     string
	jwksRefreshMax        time.Duration
	issuer, audience      string
	dev                   bool
	logLevel              string
	revocationsURL        string
	revocationsFailOpen   bool
	adminToken, adminFile string
	forwardAuthProxy      string
	devJWKS               []byte // --dev: the dev key as inline JWKS
	tls                   tlsfiles.Files
	run                   extauthz.RunConfig
}

func (f *extauthzFlags) register(fs *flag.FlagSet) {
	d := extauthz.RunDefaults()
	fs.StringVar(&f.run.GRPCListen, "grpc-listen", d.GRPCListen, "gRPC address: envoy.service.auth.v3.Authorization and grpc.health.v1.Health")
	fs.StringVar(&f.run.HTTPListen, "http-listen", d.HTTPListen, "HTTP address: forward-auth under /authz/, /healthz, /readyz, /metrics")
	fs.StringVar(&f.config, "config", "", "YAML config file (docs/extauthz.md); reloaded on SIGHUP")
	fs.StringVar(&f.jwksURL, "jwks-url", "", "one-provider shortcut: JWKS URL")
	fs.StringVar(&f.jwksFile, "jwks-file", "", "one-provider shortcut: JWKS file (reloaded when it changes)")
	fs.DurationVar(&f.jwksRefreshMax, "jwks-refresh-max-interval", 0, "one-provider shortcut: refresh_max_interval, the longest a key removed from the JWKS keeps verifying (default 1h; the JWKS's max-age decides below it)")
	fs.StringVar(&f.issuer, "issuer", "", "one-provider shortcut: required iss")
	fs.StringVar(&f.audience, "audience", "", "one-provider shortcut: accepted aud values, comma-separated")
	fs.BoolVar(&f.run.Reflection, "grpc-reflection", false, "serve gRPC reflection (for grpcurl)")
	fs.BoolVar(&f.dev, "dev", false, "generate a dev key under ./.tokengate/, trust it, print a sample token")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.revocationsURL, "revocations-url", "", "refresher base URL or its /v1/revocations feed: deny revoked sessions with token_revoked")
	fs.BoolVar(&f.revocationsFailOpen, "revocations-fail-open", false, "with --revocations-url: until the feed has synced once, allow tokens of sessions that may have been revoked (default: UNAVAILABLE)")
	fs.StringVar(&f.adminToken, "admin-token", "", "the refresher's admin bearer token, for --revocations-url (prefer --admin-token-file)")
	fs.StringVar(&f.adminFile, "admin-token-file", "", "file holding the refresher's admin bearer token")
	fs.StringVar(&f.forwardAuthProxy, "forward-auth-proxy", "", "forward_auth.proxy: the proxy whose headers describe a forward-auth request: envoy (default), nginx, traefik or caddy")
	registerHTTPLimits(fs, &f.run.HTTPLimits, d.HTTPLimits)
	registerGRPCLimits(fs, &f.run.GRPCLimits, d.GRPCLimits)
	registerTLS(fs, &f.tls)
	registerShutdown(fs, &f.run.DrainPeriod, &f.run.Grace, d.DrainPeriod)
}

// problems lists every bad limit or shutdown value, named by its flag.
func (f *extauthzFlags) problems() error {
	errs := append(httpLimitProblems(f.run.HTTPLimits), grpcLimitProblems(f.run.GRPCLimits)...)
	errs = append(errs, shutdownProblems(f.run.DrainPeriod, f.run.Grace)...)
	errs = append(errs, tlsProblems(f.tls)...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: invalid configuration:\n%w", errUsage, errors.Join(errs...))
	}
	return nil
}

func runExtauthz(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("extauthz", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f extauthzFlags
	f.register(fs)
	fs.Usage = envflag.Usage(fs, "TOKENGATE_")
	if done, err := parseFlags(fs, e); done || err != nil {
		return err
	}
	log, err := newLogger(e.stderr, f.logLevel)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := f.problems(); err != nil {
		return err
	}
	if f.run.TLS, err = newTLS(f.tls, log); err != nil {
		return err
	}
	if f.dev {
		dev, err := f.setUpDev()
		if err != nil {
			return err
		}
		if dev.Created {
			fmt.Fprintf(e.stderr, "created dev signing key %s\n", devmode.ExtauthzKeyPath)
		}
		f.run.Reflection = true
		f.run.OnListening = func(grpcAddr, httpAddr net.Addr) {
			devmode.PrintExtauthz(e.stdout, dev.Token, grpcAddr, httpAddr)
		}
	}
	cfg, err := f.loadConfig()
	if err != nil {
		return err
	}
	if f.config != "" {
		f.run.Reload = f.loadConfig
	}
	reg, err := newRegistry()
	if err != nil {
		return err
	}
	opts := extauthz.Options{Logger: log, Registry: reg}
	if f.revocationsURL != "" {
		token, tokErr := adminTokenFrom(f.adminToken, f.adminFile)
		feed, err := extauthz.NewRevocationFeed(extauthz.RevocationFeedConfig{
			URL: f.revocationsURL, AdminToken: token, Logger: log, Registry: reg, FailOpen: f.revocationsFailOpen,
		})
		if err = errors.Join(tokErr, err); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		opts.Denylist = feed
	}
	f.run.Getenv = e.getenv // OTEL_* (tracing)
	return extauthz.Run(ctx, cfg, f.run, opts)
}

// loadConfig builds the config from --config and the one-provider flags.
// With --config, the flags may only fill in a provider the file lacks.
func (f *extauthzFlags) loadConfig() (extauthz.Config, error) {
	var cfg extauthz.Config
	if f.config != "" {
		var err error
		if cfg, err = extauthz.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	shortcut := f.jwksURL != "" || f.jwksFile != "" || f.issuer != "" || f.audience != "" || f.devJWKS != nil || f.jwksRefreshMax != 0
	if shortcut {
		if len(cfg.Providers) > 0 {
			return cfg, fmt.Errorf("%w: --jwks-url/--jwks-file/--jwks-refresh-max-interval/--issuer/--audience describe the one provider; %s already lists providers", errUsage, f.config)
		}
		cfg.Providers = []extauthz.Provider{{Issuer: f.issuer, JWKSURL: f.jwksURL, JWKSFile: f.jwksFile, JWKS: f.devJWKS,
			Audiences: splitList(f.audience), RefreshMaxInterval: extauthz.Duration{Duration: f.jwksRefreshMax}}}
	}
	if f.forwardAuthProxy != "" {
		if cfg.ForwardAuth.Proxy != "" && cfg.ForwardAuth.Proxy != f.forwardAuthProxy {
			return cfg, fmt.Errorf("%w: --forward-auth-proxy %s contradicts forward_auth.proxy %s in %s", errUsage, f.forwardAuthProxy, cfg.ForwardAuth.Proxy, f.config)
		}
		cfg.ForwardAuth.Proxy = f.forwardAuthProxy
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// setUpDev fills in the dev issuer and audience unless given, and trusts
// the dev key (devmode) as the one provider's inline JWKS.
func (f *extauthzFlags) setUpDev() (devmode.ExtauthzKey, error) {
	if f.jwksURL != "" || f.jwksFile != "" || f.config != "" {
		return devmode.ExtauthzKey{}, fmt.Errorf("%w: --dev brings its own key; drop --jwks-url, --jwks-file and --config", errUsage)
	}
	if f.issuer == "" {
		f.issuer = devmode.DefaultIssuer()
	}
	if f.audience == "" {
		f.audience = devmode.Audience
	}
	dev, err := devmode.NewExtauthzKey(f.issuer, strings.Split(f.audience, ",")[0])
	f.devJWKS = dev.JWKS
	return dev, err
}
