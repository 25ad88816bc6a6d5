package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/reflection"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/serve"
)

// extauthzFlags are the flags of `tokengate extauthz` (each also TOKENGATE_<FLAG>).
type extauthzFlags struct {
	grpcListen, httpListen string
	config                 string
	jwksURL, jwksFile      string
	jwksRefreshMax         time.Duration
	issuer, audience       string
	reflection, dev        bool
	logLevel               string
	revocationsURL         string
	revocationsFailOpen    bool
	adminToken, adminFile  string
	forwardAuthProxy       string
	devJWKS                []byte // --dev: the dev key as inline JWKS
	http                   httpLimits
	grpc                   grpcLimits
	shutdown               shutdownFlags
}

func (f *extauthzFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.grpcListen, "grpc-listen", ":9001", "gRPC address: envoy.service.auth.v3.Authorization and grpc.health.v1.Health")
	fs.StringVar(&f.httpListen, "http-listen", ":9002", "HTTP address: forward-auth under /authz/, /healthz, /readyz, /metrics")
	fs.StringVar(&f.config, "config", "", "YAML config file (docs/extauthz.md); reloaded on SIGHUP")
	fs.StringVar(&f.jwksURL, "jwks-url", "", "one-provider shortcut: JWKS URL")
	fs.StringVar(&f.jwksFile, "jwks-file", "", "one-provider shortcut: JWKS file (reloaded when it changes)")
	fs.DurationVar(&f.jwksRefreshMax, "jwks-refresh-max-interval", 0, "one-provider shortcut: refresh_max_interval, the longest a key removed from the JWKS keeps verifying (default 1h; the JWKS's max-age decides below it)")
	fs.StringVar(&f.issuer, "issuer", "", "one-provider shortcut: required iss")
	fs.StringVar(&f.audience, "audience", "", "one-provider shortcut: accepted aud values, comma-separated")
	fs.BoolVar(&f.reflection, "grpc-reflection", false, "serve gRPC reflection (for grpcurl)")
	fs.BoolVar(&f.dev, "dev", false, "generate a dev key under ./.tokengate/, trust it, print a sample token")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.revocationsURL, "revocations-url", "", "refresher base URL or its /v1/revocations feed: deny revoked sessions with token_revoked")
	fs.BoolVar(&f.revocationsFailOpen, "revocations-fail-open", false, "with --revocations-url: until the feed has synced once, allow tokens of sessions that may have been revoked (default: UNAVAILABLE)")
	fs.StringVar(&f.adminToken, "admin-token", "", "the refresher's admin bearer token, for --revocations-url (prefer --admin-token-file)")
	fs.StringVar(&f.adminFile, "admin-token-file", "", "file holding the refresher's admin bearer token")
	fs.StringVar(&f.forwardAuthProxy, "forward-auth-proxy", "", "forward_auth.proxy: the proxy whose headers describe a forward-auth request: envoy (default), nginx, traefik or caddy")
	f.http.register(fs, defaultHTTPLimits)
	f.grpc.register(fs, defaultGRPCLimits)
	f.shutdown.register(fs)
}

// problems lists every bad limit or shutdown value, named by its flag.
func (f *extauthzFlags) problems() error {
	errs := append(f.http.problems(), f.grpc.problems()...)
	errs = append(errs, f.shutdown.problems()...)
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
	var devToken string
	if f.dev {
		if devToken, err = f.setUpDev(e.stderr); err != nil {
			return err
		}
		f.reflection = true
	}
	load := f.loadConfig
	cfg, err := load()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	run := extauthzRun{
		GRPCListen: f.grpcListen, HTTPListen: f.httpListen, Reflection: f.reflection,
		Logger: log, Registry: reg,
		HTTPLimits: f.http, GRPCLimits: f.grpc, DrainPeriod: f.shutdown.drainPeriod, Grace: f.shutdown.grace,
	}
	if f.config != "" {
		run.Reload = load
	}
	if f.dev {
		run.OnListening = func(grpcAddr, httpAddr net.Addr) {
			printDevWalkthrough(e.stdout, devToken, grpcAddr, httpAddr)
		}
	}
	if f.revocationsURL == "" {
		return serveExtauthz(ctx, cfg, run)
	}
	feed, err := f.revocationFeed(log, reg)
	if err != nil {
		return err
	}
	run.Denylist = feed
	// The feed runs as long as the servers do; /readyz waits for its first load.
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		feed.Run(feedCtx)
	}()
	err = serveExtauthz(ctx, cfg, run)
	stopFeed()
	<-feedDone
	return err
}

// revocationFeed builds the denylist from --revocations-url and the admin token.
func (f *extauthzFlags) revocationFeed(log *slog.Logger, reg prometheus.Registerer) (*extauthz.RevocationFeed, error) {
	token, tokErr := adminTokenFrom(f.adminToken, f.adminFile)
	feed, err := extauthz.NewRevocationFeed(extauthz.RevocationFeedConfig{
		URL: f.revocationsURL, AdminToken: token, Logger: log, Registry: reg, FailOpen: f.revocationsFailOpen,
	})
	if err = errors.Join(tokErr, err); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return feed, nil
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
		p := extauthz.Provider{Issuer: f.issuer, JWKSURL: f.jwksURL, JWKSFile: f.jwksFile, JWKS: f.devJWKS,
			RefreshMaxInterval: extauthz.Duration{Duration: f.jwksRefreshMax}}
		for _, a := range strings.Split(f.audience, ",") {
			if a = strings.TrimSpace(a); a != "" {
				p.Audiences = append(p.Audiences, a)
			}
		}
		cfg.Providers = []extauthz.Provider{p}
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

// devKeyPath is where --dev keeps its key, so restarts keep tokens valid.
var devKeyPath = filepath.Join(".tokengate", "extauthz-dev-key.json")

// Dev defaults, used unless --issuer/--audience say otherwise.
const (
	devIssuer   = "http://localhost:8080"
	devAudience = "tokengate"
)

// setUpDev loads or creates the dev key, makes it the inline JWKS of the one
// provider, and signs a sample token valid for an hour.
func (f *extauthzFlags) setUpDev(stderr io.Writer) (string, error) {
	if f.jwksURL != "" || f.jwksFile != "" || f.config != "" {
		return "", fmt.Errorf("%w: --dev brings its own key; drop --jwks-url, --jwks-file and --config", errUsage)
	}
	keys, created, err := keyset.LoadOrCreate(devKeyPath, jwa.ES256())
	if err != nil {
		return "", fmt.Errorf("dev key: %w", err)
	}
	if created {
		fmt.Fprintf(stderr, "created dev signing key %s\n", devKeyPath)
	}
	if f.issuer == "" {
		f.issuer = devIssuer
	}
	if f.audience == "" {
		f.audience = devAudience
	}
	jwks, err := keys.PublicJSON()
	if err != nil {
		return "", err
	}
	f.devJWKS = jwks
	aud := strings.Split(f.audience, ",")[0]
	return signDevToken(keys, f.issuer, aud, time.Hour)
}

// signDevToken signs a sample access token like the refresher's (RFC 9068).
func signDevToken(keys *keyset.Keys, issuer, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	sid := make([]byte, 8)
	rand.Read(sid)
	claims := map[string]any{
		"iss": issuer, "aud": audience, "sub": "dev-user", "name": "Dev User",
		"roles": []string{"user"}, "sid": "dev-" + hex.EncodeToString(sid), "jti": hex.EncodeToString(sid),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, keys.SignerKID())
	hdr.Set(jws.TypeKey, "at+jwt")
	tok, err := jws.Sign(payload, jws.WithKey(keys.SignerAlg(), keys.Signer, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	return string(tok), nil
}

func printDevWalkthrough(w io.Writer, token string, grpcAddr, httpAddr net.Addr) {
	fmt.Fprintf(w, `tokengate extauthz (dev) is running.
  gRPC ext_authz: %[1]s   HTTP forward-auth: http://%[2]s/authz/

A sample access token (valid 1h, sub=dev-user):

  export TOKEN=%[3]s

Allowed (200, identity headers in the answer):
  curl -i -H "Authorization: Bearer $TOKEN" http://%[2]s/authz/hello

Denied (401 missing_token):
  curl -i http://%[2]s/authz/hello

Over gRPC (reflection is on in dev mode):
  grpcurl -plaintext -d '{"attributes":{"request":{"http":{"method":"GET","host":"app","path":"/hello","headers":{"authorization":"Bearer '"$TOKEN"'"}}}}}' %[1]s envoy.service.auth.v3.Authorization/Check
`, grpcAddr, httpAddr, token)
}

// extauthzRun is how to serve extauthz; `tokengate dev` fills one in to run
// extauthz in-process next to the refresher.
type extauthzRun struct {
	GRPCListen, HTTPListen string // ":9001", ":9002"; ":0" picks a free port
	Reflection             bool
	Logger                 *slog.Logger
	Registry               *prometheus.Registry // metrics go here and /metrics serves it
	Denylist               extauthz.Denylist    // nil: no revocation check
	// Reload, when set, is called on SIGHUP for the new config; a config
	// that fails is logged and the running one kept.
	Reload func() (extauthz.Config, error)
	// OnListening is called once both listeners are bound.
	OnListening func(grpcAddr, httpAddr net.Addr)
	// HTTPLimits and GRPCLimits bound the listeners; zero values are the
	// flags' defaults.
	HTTPLimits httpLimits
	GRPCLimits grpcLimits
	// DrainPeriod: after ctx ends, health NOT_SERVING for this long before
	// the listeners close. Grace bounds the checks in flight after that
	// (0: serve.DefaultGrace).
	DrainPeriod, Grace time.Duration
	// HealthPoll is extauthz.Options.HealthPoll (tests).
	HealthPoll time.Duration
}

// serveExtauthz serves extauthz until ctx ends, then shuts down in the
// order load balancers need (internal/serve): health turns NOT_SERVING,
// both listeners keep serving for the drain period, health Watch streams
// end, the listeners close, and checks in flight finish.
func serveExtauthz(ctx context.Context, cfg extauthz.Config, run extauthzRun) error {
	if run.Logger == nil {
		run.Logger = slog.New(slog.DiscardHandler)
	}
	if run.Registry == nil {
		run.Registry = prometheus.NewRegistry()
	}
	httpLim := run.HTTPLimits.orDefault(defaultHTTPLimits)
	grpcLim := run.GRPCLimits.orDefault(defaultGRPCLimits)
	srv, err := extauthz.NewServer(cfg, extauthz.Options{
		Logger: run.Logger, Registry: run.Registry, Denylist: run.Denylist,
		HealthPoll: run.HealthPoll, MaxHealthWatches: grpcLim.maxHealthWatches,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	grpcLn, err := net.Listen("tcp", run.GRPCListen)
	if err != nil {
		return fmt.Errorf("--grpc-listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", run.HTTPListen)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("--http-listen: %w", err)
	}
	gs := grpcLim.server()
	srv.RegisterGRPC(gs)
	if run.Reflection {
		reflection.Register(gs)
	}
	run.Logger.Info("extauthz listening", "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String(), "providers", len(cfg.Providers))
	if run.OnListening != nil {
		run.OnListening(grpcLn.Addr(), httpLn.Addr())
	}

	group := serve.New(serve.Options{
		DrainPeriod: run.DrainPeriod, Grace: run.Grace, Logger: run.Logger,
		OnDrain: func() {
			run.Logger.Info("extauthz shutting down: health NOT_SERVING, finishing checks in flight", "drain_period", run.DrainPeriod.String())
			srv.Shutdown()
		},
		OnStop: srv.EndWatches,
	})
	group.GRPC(gs, grpcLim.listener(grpcLn))
	group.HTTP(httpLim.server(srv.Routes()), httpLim.listener(httpLn))

	// SIGHUP is always caught: without --config there is nothing to
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
			reloadConfig(ctx, srv, run)
		}
	}
}

func reloadConfig(ctx context.Context, srv *extauthz.Server, run extauthzRun) {
	if run.Reload == nil {
		run.Logger.Info("SIGHUP ignored: no --config to reload")
		return
	}
	cfg, err := run.Reload()
	if err == nil {
		err = srv.Reload(ctx, cfg)
	}
	if err != nil {
		run.Logger.Warn("config reload refused; keeping the running config", "error", err.Error())
		return
	}
	run.Logger.Info("config reloaded", "providers", len(cfg.Providers))
}
