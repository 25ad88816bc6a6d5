// Package refresher issues, rotates and revokes access+refresh token pairs.
//
// A session (sid) is one sign-in: a family of opaque refresh tokens, each
// rotated into the next by POST /v1/token. Concurrent or retried refreshes of
// one token converge on the same new pair (replay inside a grace window);
// a rotated token presented later is reuse, which revokes the session. The
// server also publishes the signing keys (JWKS) and a long-poll feed of
// revoked sessions for extauthz. Storage is a store.Store backend.
package refresher

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Transport says where refresh tokens travel between the refresher and a
// browser.
type Transport string

const (
	// TransportBody sends and reads the refresh token in JSON/form bodies.
	TransportBody Transport = "body"
	// TransportCookie sets the refresh token as an HttpOnly; Secure;
	// SameSite=Strict cookie scoped to /v1/token and reads it from there, so
	// page scripts never see it.
	TransportCookie Transport = "cookie"
	// TransportBoth does both: the body field wins when a request has both.
	TransportBoth Transport = "both"
)

func (t Transport) body() bool   { return t == TransportBody || t == TransportBoth }
func (t Transport) cookie() bool { return t == TransportCookie || t == TransportBoth }

// Config is the refresher's behaviour. Zero fields take the defaults from
// Defaults; Validate reports every problem at once.
type Config struct {
	// Issuer is the iss claim of every access token (e.g. https://auth.example.com).
	Issuer string
	// Audience is the aud claim (one or more values).
	Audience []string
	// AccessTTL is the lifetime of an access token.
	AccessTTL time.Duration
	// RefreshTTL is the idle lifetime of a refresh token: it slides on every
	// rotation, and it is the longest idle_ttl a session may ask for.
	RefreshTTL time.Duration
	// SessionMaxAge is the absolute lifetime of a session; no refresh
	// extends past it.
	SessionMaxAge time.Duration
	// ReuseGrace is how long after a rotation the parent token is replayed
	// (answered with the same child) instead of treated as reuse.
	ReuseGrace time.Duration
	// AdminToken is the bearer token for the admin endpoints (sessions,
	// session and subject revocation, claims, revocation feed).
	AdminToken string
	// CORSAllowedOrigins are the browser origins allowed to call /v1/token
	// and /v1/revoke with credentials ("*" is refused: credentials need
	// exact origins). With the cookie transport they are also the only
	// cross-origin pages whose requests may use the refresh cookie (CSRF).
	CORSAllowedOrigins []string
	// RefreshTokenTransport: body, cookie or both.
	RefreshTokenTransport Transport
	// CookiePath is the refresh cookie's Path: the token endpoint as the
	// browser addresses it (different from /v1/token when a proxy mounts
	// the refresher under a prefix). Sign-out with the cookie is
	// CookiePath + "/revoke" as the browser sees it.
	CookiePath string
	// RecentSize bounds the LRU of recently issued pairs.
	RecentSize int
	// RateLimitIP is how many counted /v1/token attempts (rotations and
	// failures, never replays) and /v1/revoke requests (all of them) one
	// client IP may make per second, one bucket for both, with
	// RateLimitIPBurst as the bucket size. Zero disables it.
	RateLimitIP      float64
	RateLimitIPBurst int
	// RateLimitSession is the same per session.
	RateLimitSession      float64
	RateLimitSessionBurst int
	// MaxBodyBytes caps request bodies.
	MaxBodyBytes int64
	// StoreTimeout bounds each store call; a timeout answers 503.
	StoreTimeout time.Duration
	// RevocationsMaxWait caps the long-poll wait of /v1/revocations.
	RevocationsMaxWait time.Duration
	// JWKSMaxAge is the Cache-Control max-age of the JWKS.
	JWKSMaxAge time.Duration
	// ClientIPHeader, when set, names the header a trusted proxy puts the
	// client address in (X-Forwarded-For: the last entry is used, the one
	// the nearest proxy appended; X-Real-IP: the value). Empty: the TCP peer.
	ClientIPHeader string
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		AccessTTL:             15 * time.Minute,
		RefreshTTL:            720 * time.Hour,
		SessionMaxAge:         2160 * time.Hour,
		ReuseGrace:            30 * time.Second,
		RefreshTokenTransport: TransportBody,
		CookiePath:            "/v1/token",
		RecentSize:            10000,
		RateLimitIP:           10,
		RateLimitIPBurst:      50,
		RateLimitSession:      1,
		RateLimitSessionBurst: 10,
		MaxBodyBytes:          64 << 10,
		StoreTimeout:          2 * time.Second,
		RevocationsMaxWait:    60 * time.Second,
		JWKSMaxAge:            5 * time.Minute,
	}
}

// Validate checks c without side effects and returns every problem, each
// starting with the name of its field (AccessTTL, CORSAllowedOrigins[2], …);
// a command maps those names to its own (flag names).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Issuer == "" {
		bad("Issuer", "required (the iss claim of access tokens)")
	} else if u, err := url.Parse(c.Issuer); err != nil || u.Scheme == "" || u.Host == "" {
		bad("Issuer", "must be an absolute URL, got %q", c.Issuer)
	}
	if len(c.Audience) == 0 {
		bad("Audience", "at least one audience is required")
	}
	for i, a := range c.Audience {
		if strings.TrimSpace(a) == "" {
			bad(fmt.Sprintf("Audience[%d]", i), "empty")
		}
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "must be positive, got %s", d)
		}
	}
	positive("AccessTTL", c.AccessTTL)
	positive("RefreshTTL", c.RefreshTTL)
	positive("SessionMaxAge", c.SessionMaxAge)
	positive("ReuseGrace", c.ReuseGrace)
	positive("StoreTimeout", c.StoreTimeout)
	positive("RevocationsMaxWait", c.RevocationsMaxWait)
	if c.SessionMaxAge > 0 && c.RefreshTTL > c.SessionMaxAge {
		bad("RefreshTTL", "%s is longer than SessionMaxAge %s", c.RefreshTTL, c.SessionMaxAge)
	}
	if c.ReuseGrace > 0 && c.AccessTTL > 0 && c.ReuseGrace >= c.AccessTTL {
		bad("ReuseGrace", "%s must be shorter than AccessTTL %s", c.ReuseGrace, c.AccessTTL)
	}
	if c.AdminToken == "" {
		bad("AdminToken", "required")
	} else if len(c.AdminToken) < 16 {
		bad("AdminToken", "must be at least 16 characters")
	}
	for i, o := range c.CORSAllowedOrigins {
		field := fmt.Sprintf("CORSAllowedOrigins[%d]", i)
		if o == "*" {
			bad(field, "\"*\" cannot be used with credentials; list exact origins")
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad(field, "must be an origin like https://app.example.com, got %q", o)
		}
	}
	switch c.RefreshTokenTransport {
	case TransportBody, TransportCookie, TransportBoth:
	default:
		bad("RefreshTokenTransport", "must be body, cookie or both, got %q", c.RefreshTokenTransport)
	}
	if !strings.HasPrefix(c.CookiePath, "/") || strings.ContainsAny(c.CookiePath, "; \t\r\n") {
		bad("CookiePath", "must be an absolute path like /v1/token, got %q", c.CookiePath)
	}
	if c.RecentSize <= 0 {
		bad("RecentSize", "must be positive, got %d", c.RecentSize)
	}
	if c.RateLimitIP < 0 {
		bad("RateLimitIP", "must not be negative")
	}
	if c.RateLimitSession < 0 {
		bad("RateLimitSession", "must not be negative")
	}
	if c.RateLimitIP > 0 && c.RateLimitIPBurst < 1 {
		bad("RateLimitIPBurst", "must be at least 1")
	}
	if c.RateLimitSession > 0 && c.RateLimitSessionBurst < 1 {
		bad("RateLimitSessionBurst", "must be at least 1")
	}
	if c.MaxBodyBytes < 1024 {
		bad("MaxBodyBytes", "must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.JWKSMaxAge < 0 {
		bad("JWKSMaxAge", "must not be negative")
	}
	switch strings.ToLower(c.ClientIPHeader) {
	case "", "x-forwarded-for", "x-real-ip":
	default:
		bad("ClientIPHeader", "must be X-Forwarded-For or X-Real-IP, got %q", c.ClientIPHeader)
	}
	return errors.Join(errs...)
}
