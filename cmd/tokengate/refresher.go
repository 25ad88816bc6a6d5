package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store"
)

// refresherFlags are the flags of `tokengate refresher` (and the refresher
// half of `tokengate dev`).
type refresherFlags struct {
	listen         string
	store          string
	signingKey     string
	signingKeyID   string
	signingAlg     string
	issuer         string
	audience       string
	adminToken     string
	adminTokenFile string
	dev            bool
	cors           string
	transport      string
	logLevel       string
	cfg            refresher.Config
	storeOpts      storeOptions
	http           httpLimits
	shutdown       shutdownFlags
}

func (f *refresherFlags) register(fs *flag.FlagSet) {
	d := refresher.Defaults()
	f.cfg = d
	fs.StringVar(&f.listen, "listen", ":8080", "HTTP listen address")
	fs.StringVar(&f.store, "store", "bolt://tokengate.db", "session store: bolt://PATH, memory://, redis://HOST:PORT or rediss://…")
	fs.StringVar(&f.signingKey, "signing-key", "", "signing key file: PEM, JWK or JWK set (one active signer, the others published)")
	fs.StringVar(&f.signingKeyID, "signing-key-id", "", "kid of the active signer when the key file holds several private keys")
	fs.StringVar(&f.signingAlg, "signing-alg", "ES256", "algorithm for a generated key (--dev): ES256, ES384, RS256, PS256 or EdDSA")
	fs.StringVar(&f.issuer, "issuer", "", "iss claim of access tokens (an absolute URL); with --dev defaults to http://localhost:PORT")
	fs.StringVar(&f.audience, "audience", "", "aud claim of access tokens, comma-separated; with --dev defaults to tokengate-dev")
	fs.DurationVar(&f.cfg.AccessTTL, "access-ttl", d.AccessTTL, "access-token lifetime")
	fs.DurationVar(&f.cfg.RefreshTTL, "refresh-ttl", d.RefreshTTL, "refresh-token idle lifetime (slides on each refresh; the longest idle_ttl a session may ask for)")
	fs.DurationVar(&f.cfg.SessionMaxAge, "session-max-age", d.SessionMaxAge, "absolute session lifetime; no refresh extends past it")
	fs.DurationVar(&f.cfg.ReuseGrace, "reuse-grace", d.ReuseGrace, "window after a rotation in which the old token is answered with the same new pair")
	fs.StringVar(&f.adminToken, "admin-token", "", "bearer token for the admin endpoints (prefer --admin-token-file)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token")
	fs.BoolVar(&f.dev, "dev", false, "development mode: generate and keep a signing key and admin token beside the bolt file")
	fs.StringVar(&f.cors, "cors-allowed-origins", "", "comma-separated browser origins allowed to call /v1/token and /v1/revoke with credentials")
	fs.StringVar(&f.transport, "refresh-token-transport", string(d.RefreshTokenTransport), "where refresh tokens travel: body, cookie (HttpOnly) or both")
	fs.StringVar(&f.cfg.CookiePath, "cookie-path", d.CookiePath, "Path of the refresh cookie: the token endpoint as the browser addresses it (when a proxy mounts the refresher under a prefix)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.cfg.StoreTimeout, "store-timeout", d.StoreTimeout, "timeout of each store call (a timeout answers 503)")
	fs.IntVar(&f.cfg.RecentSize, "recent-size", d.RecentSize, "entries in the in-process LRU of recently issued pairs")
	fs.Float64Var(&f.cfg.RateLimitIP, "rate-limit-ip", d.RateLimitIP, "counted /v1/token attempts (rotations and failures) and /v1/revoke requests per second per client IP; 0 disables")
	fs.IntVar(&f.cfg.RateLimitIPBurst, "rate-limit-ip-burst", d.RateLimitIPBurst, "burst of --rate-limit-ip")
	fs.Float64Var(&f.cfg.RateLimitSession, "rate-limit-session", d.RateLimitSession, "rotations and failures per second per session; 0 disables")
	fs.IntVar(&f.cfg.RateLimitSessionBurst, "rate-limit-session-burst", d.RateLimitSessionBurst, "burst of --rate-limit-session")
	fs.StringVar(&f.cfg.ClientIPHeader, "client-ip-header", "", "header a trusted proxy sets with the client address: X-Forwarded-For (last entry) or X-Real-IP; empty uses the TCP peer")
	fs.Int64Var(&f.cfg.MaxBodyBytes, "max-body-bytes", d.MaxBodyBytes, "largest accepted request body")
	fs.DurationVar(&f.cfg.JWKSMaxAge, "jwks-max-age", d.JWKSMaxAge, "Cache-Control max-age of /.well-known/jwks.json")
	fs.DurationVar(&f.cfg.RevocationsMaxWait, "revocations-max-wait", d.RevocationsMaxWait, "longest long-poll wait of /v1/revocations")
	fs.StringVar(&f.storeOpts.RedisSentinelMaster, "redis-sentinel-master", "", "Redis Sentinel master name (the redis:// hosts are then Sentinels)")
	fs.DurationVar(&f.storeOpts.RedisTimeout, "redis-timeout", time.Second, "timeout of each Redis command")
	f.http.register(fs, refresherHTTPLimits(d.RevocationsMaxWait))
	f.shutdown.register(fs)
}

// refresherHTTPLimits are extauthz's HTTP limits with a write timeout
// longer than the longest /v1/revocations long poll.
func refresherHTTPLimits(revocationsMaxWait time.Duration) httpLimits {
	l := defaultHTTPLimits
	l.writeTimeout = revocationsMaxWait + 15*time.Second
	return l
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// randomSecret returns 256 random bits, base64url.
func randomSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// refresherApp is a wired refresher, ready to serve.
type refresherApp struct {
	srv        *refresher.Server
	store      store.Store
	cfg        refresher.Config
	adminToken string
	// adminTokenPath is where --dev keeps the admin token ("" otherwise).
	adminTokenPath string
	log            *slog.Logger
	http           httpLimits
	shutdown       shutdownFlags
}

// build turns flags into a running configuration: every config problem is
// reported at once, before anything is opened.
func (f *refresherFlags) build(ctx context.Context, log *slog.Logger, reg *prometheus.Registry) (*refresherApp, error) {
	cfg := f.cfg
	cfg.Issuer = f.issuer
	cfg.Audience = splitList(f.audience)
	cfg.CORSAllowedOrigins = splitList(f.cors)
	cfg.RefreshTokenTransport = refresher.Transport(f.transport)
	app := &refresherApp{log: log}
	var errs []error
	adminToken, err := adminTokenFrom(f.adminToken, f.adminTokenFile)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.AdminToken = adminToken
	dir := boltDir(f.store)
	if f.dev {
		if cfg.Issuer == "" {
			cfg.Issuer = "http://localhost" + portOf(f.listen)
		}
		if len(cfg.Audience) == 0 {
			cfg.Audience = []string{"tokengate-dev"}
		}
		// With a bolt store the admin token is kept beside the file, where
		// the user can read it; other stores have no such place, so they
		// still need --admin-token (a token nobody can read is useless).
		if cfg.AdminToken == "" && dir != "" {
			app.adminTokenPath = filepath.Join(dir, "admin-token")
			tok, err := loadOrCreateSecret(app.adminTokenPath)
			if err != nil {
				errs = append(errs, fmt.Errorf("admin-token: %w", err))
			}
			cfg.AdminToken = tok
		}
	}
	if !f.dev && f.signingKey == "" {
		errs = append(errs, errors.New("signing-key: required (or --dev to generate one beside the bolt file)"))
	}
	alg, err := keyset.ParseAlg(f.signingAlg)
	if err != nil {
		errs = append(errs, fmt.Errorf("signing-alg: %w", err))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, f.http.problems()...)
	errs = append(errs, f.shutdown.problems()...)
	if f.http.writeTimeout > 0 && f.http.writeTimeout <= cfg.RevocationsMaxWait {
		errs = append(errs, fmt.Errorf("http-write-timeout: must be longer than revocations-max-wait (%v), or long polls are cut", cfg.RevocationsMaxWait))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: invalid configuration:\n%w", errUsage, errors.Join(errs...))
	}

	var keys *keyset.Keys
	switch {
	case f.signingKey != "":
		keys, err = keyset.Load(f.signingKey, f.signingKeyID)
	case dir != "":
		var created bool
		path := filepath.Join(dir, "signing-key.json")
		keys, created, err = keyset.LoadOrCreate(path, alg)
		if created {
			log.Info("dev_signing_key_created", "path", path, "kid", keys.SignerKID())
		}
	default:
		// memory:// or redis:// in dev mode: the key lives as long as the
		// process, like the sessions of a memory store.
		var k jwk.Key
		if k, err = keyset.Generate(alg); err == nil {
			keys, err = keyset.Assemble([]jwk.Key{k}, "")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	f.storeOpts.Logger = log
	st, err := openStore(ctx, f.store, f.storeOpts)
	if err != nil {
		return nil, err
	}
	srv, err := refresher.NewServer(cfg, refresher.Options{Store: st, Keys: keys, Logger: log, Registry: reg})
	if err != nil {
		st.Close()
		return nil, err
	}
	app.srv, app.store, app.cfg, app.adminToken = srv, st, cfg, cfg.AdminToken
	app.http, app.shutdown = f.http, f.shutdown
	log.Info("refresher_configured", "store", storeScheme(f.store), "kid", keys.SignerKID(),
		"alg", keys.SignerAlg().String(), "issuer", cfg.Issuer, "transport", string(cfg.RefreshTokenTransport))
	return app, nil
}

func storeScheme(uri string) string {
	scheme, _, _ := strings.Cut(uri, "://")
	return scheme
}

func portOf(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		return ""
	}
	return ":" + port
}

// loadOrCreateSecret reads a secret file, creating it (0600) when missing.
func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	s := randomSecret()
	return s, keyset.WriteFileAtomic(path, []byte(s+"\n"), 0o600)
}

// serve runs the refresher on ln until ctx ends, pruning the store's dead
// records meanwhile.
func (a *refresherApp) serve(ctx context.Context, ln net.Listener) error {
	go a.srv.RunPruner(ctx, refresher.PruneInterval)
	group := serve.New(serve.Options{
		DrainPeriod: a.shutdown.drainPeriod, Grace: a.shutdown.grace, Logger: a.log,
		// /readyz answers 503 from SIGTERM on, while requests are still served.
		OnDrain: func() {
			a.log.Info("refresher_draining", "drain_period", a.shutdown.drainPeriod.String())
			a.srv.Shutdown()
		},
		// Long polls answer at once so they do not hold the shutdown.
		OnStop: a.srv.Drain,
	})
	lim := a.http.orDefault(refresherHTTPLimits(a.cfg.RevocationsMaxWait))
	group.HTTP(lim.server(a.srv.Routes()), lim.listener(ln))
	a.log.Info("refresher_listening", "addr", ln.Addr().String())
	return group.Run(ctx)
}

func runRefresher(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("refresher", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = envflag.Usage(fs, "TOKENGATE_")
	var f refresherFlags
	f.register(fs)
	if done, err := parseFlags(fs, e); done || err != nil {
		return err
	}
	log, err := newLogger(e.stderr, f.logLevel)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	app, err := f.build(ctx, log, reg)
	if err != nil {
		return err
	}
	defer app.store.Close()
	if app.adminTokenPath != "" {
		log.Info("dev_admin_token", "path", app.adminTokenPath)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.listen, err)
	}
	if f.signingKey != "" {
		go reloadKeysOnHUP(ctx, app, f.signingKey, f.signingKeyID)
	}
	return app.serve(ctx, ln)
}

// reloadKeysOnHUP re-reads the key file on SIGHUP, so a signer switch or a
// newly published key needs no restart. A file that fails to load is
// logged and the running keys are kept.
func reloadKeysOnHUP(ctx context.Context, app *refresherApp, path, kid string) {
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
				err = app.srv.SetKeys(keys)
			}
			if err != nil {
				app.log.Warn("signing key reload failed", "error", err.Error())
				continue
			}
			app.log.Info("signing keys reloaded", "kid", keys.SignerKID(), "published", keys.Public.Len())
		}
	}
}
