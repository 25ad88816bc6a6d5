package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/devmode"
	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/refresher"
)

// refresherFlags are the flags of `tokengate refresher` (and the refresher
// half of `tokengate dev`).
type refresherFlags struct {
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
	dpop           string
	dpopAlgs       string
	dpopSignin     string
	dpopNonceFile  string
	cfg            refresher.Config
	run            refresher.RunConfig
	storeOpts      storeOptions
	tls            tlsfiles.Files
}

func (f *refresherFlags) register(fs *flag.FlagSet) {
	d, rd := refresher.Defaults(), refresher.RunDefaults()
	f.cfg = d
	fs.StringVar(&f.run.Listen, "listen", rd.Listen, "HTTP listen address")
	fs.StringVar(&f.store, "store", "bolt://tokengate.db", "session store: bolt://PATH, memory://, redis://HOST:PORT or rediss://…")
	fs.StringVar(&f.signingKey, "signing-key", "", "signing key file: PEM, JWK or JWK set (one active signer, the others published)")
	fs.StringVar(&f.signingKeyID, "signing-key-id", "", "kid of the active signer when the key file holds several private keys")
	fs.StringVar(&f.signingAlg, "signing-alg", "ES256", "algorithm for a generated key (--dev): ES256, ES384, RS256, PS256 or EdDSA")
	fs.StringVar(&f.issuer, "issuer", "", "iss claim of access tokens (an absolute URL); with --dev defaults to http://localhost:PORT")
	fs.StringVar(&f.audience, "audience", "", "aud claim of access tokens, comma-separated; with --dev defaults to "+devmode.Audience)
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
	fs.StringVar(&f.dpop, "dpop", string(d.DPoP), "DPoP proofs (RFC 9449): off, optional (a session is bound to the key of its first proof) or required")
	fs.StringVar(&f.dpopAlgs, "dpop-algorithms", strings.Join(d.DPoPAlgorithms, ","), "comma-separated DPoP proof algorithms accepted (asymmetric only)")
	fs.DurationVar(&f.cfg.DPoPMaxAge, "dpop-max-age", d.DPoPMaxAge, "how long after its iat a DPoP proof is accepted (and its jti remembered)")
	fs.BoolVar(&f.cfg.DPoPNonce, "dpop-nonce", false, "require a server nonce (DPoP-Nonce) in refresh proofs")
	fs.StringVar(&f.dpopNonceFile, "dpop-nonce-secret-file", "", "file holding the nonce key (at least 32 bytes), the same for every replica; empty: a random key (one replica only)")
	fs.DurationVar(&f.cfg.DPoPNonceLifetime, "dpop-nonce-lifetime", d.DPoPNonceLifetime, "how long a DPoP nonce is accepted")
	fs.Int64Var(&f.cfg.DPoPReplayCacheBytes, "dpop-replay-cache-bytes", d.DPoPReplayCacheBytes, "memory bound of the DPoP proofs remembered against replay")
	fs.StringVar(&f.dpopSignin, "dpop-signin-urls", "", "comma-separated login URLs whose DPoP proofs a login backend may forward to POST /v1/sessions")
	fs.StringVar(&f.cfg.ExternalURL, "external-url", "", "the refresher's base URL as browsers address it (DPoP htu of /v1/token is it + /v1/token); empty: the request's scheme and Host")
	fs.BoolVar(&f.cfg.BindNetwork, "bind-network", false, "put the client address into each access token as cnf.ip")
	registerHTTPLimits(fs, &f.run.HTTPLimits, rd.HTTPLimits)
	registerShutdown(fs, &f.run.DrainPeriod, &f.run.Grace, rd.DrainPeriod)
	registerTLS(fs, &f.tls)
}

// refresherFlagNames maps the refresher.Config fields that Validate names
// to the flags that set them, longest first so no name is cut short.
var refresherFlagNames = func() *strings.Replacer {
	names := map[string]string{
		"AdminToken: required": "admin-token: required (or --admin-token-file)",
		"Issuer":               "issuer", "Audience": "audience", "AccessTTL": "access-ttl", "RefreshTTL": "refresh-ttl",
		"SessionMaxAge": "session-max-age", "ReuseGrace": "reuse-grace", "AdminToken": "admin-token",
		"CORSAllowedOrigins": "cors-allowed-origins", "RefreshTokenTransport": "refresh-token-transport",
		"CookiePath": "cookie-path", "RecentSize": "recent-size", "RateLimitIP": "rate-limit-ip",
		"RateLimitIPBurst": "rate-limit-ip-burst", "RateLimitSession": "rate-limit-session",
		"RateLimitSessionBurst": "rate-limit-session-burst", "MaxBodyBytes": "max-body-bytes",
		"StoreTimeout": "store-timeout", "RevocationsMaxWait": "revocations-max-wait",
		"JWKSMaxAge": "jwks-max-age", "ClientIPHeader": "client-ip-header",
		"DPoP": "dpop", "DPoPAlgorithms": "dpop-algorithms", "DPoPMaxAge": "dpop-max-age",
		"DPoPNonceSecret": "dpop-nonce-secret-file", "DPoPNonceLifetime": "dpop-nonce-lifetime",
		"DPoPReplayCacheBytes": "dpop-replay-cache-bytes", "DPoPSigninURLs": "dpop-signin-urls",
		"ExternalURL": "external-url",
	}
	fields := make([]string, 0, len(names))
	for f := range names {
		fields = append(fields, f)
	}
	sort.Slice(fields, func(i, j int) bool { return len(fields[i]) > len(fields[j]) })
	var pairs []string
	for _, f := range fields {
		pairs = append(pairs, f, names[f])
	}
	return strings.NewReplacer(pairs...)
}()

// refresherSetup is a refresher ready to Run.
type refresherSetup struct {
	cfg  refresher.Config
	run  refresher.RunConfig
	opts refresher.Options
	// adminTokenPath is where --dev keeps the admin token ("" otherwise).
	adminTokenPath string
}

// build turns the flags into a refresher ready to Run: every config
// problem is reported at once, before anything is opened.
func (f *refresherFlags) build(ctx context.Context, log *slog.Logger, reg *prometheus.Registry) (*refresherSetup, error) {
	s := &refresherSetup{cfg: f.cfg, run: f.run}
	cfg := &s.cfg
	cfg.Issuer, cfg.Audience = f.issuer, splitList(f.audience)
	cfg.CORSAllowedOrigins = splitList(f.cors)
	cfg.RefreshTokenTransport = refresher.Transport(f.transport)
	cfg.DPoP = refresher.DPoPMode(f.dpop)
	cfg.DPoPAlgorithms = splitList(f.dpopAlgs)
	cfg.DPoPSigninURLs = splitList(f.dpopSignin)
	var errs []error
	if f.dpopNonceFile != "" {
		b, err := os.ReadFile(f.dpopNonceFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("dpop-nonce-secret-file: %w", err))
		} else if cfg.DPoPNonceSecret = bytes.TrimSpace(b); len(cfg.DPoPNonceSecret) == 0 {
			errs = append(errs, fmt.Errorf("dpop-nonce-secret-file %s: empty", f.dpopNonceFile))
		}
	}
	if f.dpopAlgs != "" && len(cfg.DPoPAlgorithms) == 0 {
		errs = append(errs, errors.New("dpop-algorithms: at least one algorithm"))
	}
	adminToken, err := adminTokenFrom(f.adminToken, f.adminTokenFile)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.AdminToken = adminToken
	dir := devmode.BoltDir(f.store)
	if f.dev {
		if cfg.Issuer == "" {
			cfg.Issuer = devmode.Issuer(f.run.Listen)
		}
		if len(cfg.Audience) == 0 {
			cfg.Audience = []string{devmode.Audience}
		}
		// With a bolt store the admin token is kept beside the file, where
		// the user can read it; other stores have no such place, so they
		// still need --admin-token (a token nobody can read is useless).
		if cfg.AdminToken == "" && dir != "" {
			if cfg.AdminToken, s.adminTokenPath, err = devmode.AdminToken(dir); err != nil {
				errs = append(errs, fmt.Errorf("admin-token: %w", err))
			}
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
		errs = append(errs, errors.New(refresherFlagNames.Replace(err.Error())))
	}
	errs = append(errs, httpLimitProblems(f.run.HTTPLimits)...)
	errs = append(errs, shutdownProblems(f.run.DrainPeriod, f.run.Grace)...)
	errs = append(errs, tlsProblems(f.tls)...)
	if w := f.run.HTTPLimits.WriteTimeout; w > 0 && w <= cfg.RevocationsMaxWait {
		errs = append(errs, fmt.Errorf("http-write-timeout: must be longer than revocations-max-wait (%v), or long polls are cut", cfg.RevocationsMaxWait))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: invalid configuration:\n%w", errUsage, errors.Join(errs...))
	}
	if s.run.TLS, err = newTLS(f.tls, log); err != nil {
		return nil, err
	}

	var keys *keyset.Keys
	if f.signingKey != "" {
		keys, err = keyset.Load(f.signingKey, f.signingKeyID)
		s.run.SigningKeyFile, s.run.SigningKeyID = f.signingKey, f.signingKeyID
	} else {
		var path string
		var created bool
		keys, path, created, err = devmode.SigningKeys(dir, alg)
		if created && path != "" {
			log.Info("dev signing key created", "path", path, "kid", keys.SignerKID())
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
	s.opts = refresher.Options{Store: st, Keys: keys, Logger: log, Registry: reg}
	scheme, _, _ := strings.Cut(f.store, "://")
	log.Info("refresher configured", "store", scheme, "kid", keys.SignerKID(),
		"alg", keys.SignerAlg().String(), "issuer", cfg.Issuer, "transport", string(cfg.RefreshTokenTransport),
		"dpop", string(cfg.DPoP), "dpop_nonce", cfg.DPoPNonce)
	return s, nil
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
	reg, err := newRegistry()
	if err != nil {
		return err
	}
	s, err := f.build(ctx, log, reg)
	if err != nil {
		return err
	}
	defer s.opts.Store.Close()
	if s.adminTokenPath != "" {
		log.Info("dev admin token", "path", s.adminTokenPath)
	}
	s.run.Getenv = e.getenv // OTEL_* (tracing)
	return refresher.Run(ctx, s.cfg, s.run, s.opts)
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
