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
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokengate/tokengate/internal/dpop"
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

// DPoPMode is how the refresher treats DPoP proofs (RFC 9449).
type DPoPMode string

const (
	// DPoPOff ignores the DPoP header and dpop_jkt: tokens are Bearer. A
	// session bound earlier still needs its key, so it can no longer be
	// refreshed (a bound session never downgrades to Bearer).
	DPoPOff DPoPMode = "off"
	// DPoPOptional binds a session to the key of the first valid proof
	// (at sign-in or at a refresh) and accepts refreshes without a proof for
	// sessions that are not bound.
	DPoPOptional DPoPMode = "optional"
	// DPoPRequired refuses sign-ins without a key and refreshes without a
	// valid proof.
	DPoPRequired DPoPMode = "required"
)

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

	// DPoP is off, optional or required ("" is optional).
	DPoP DPoPMode
	// DPoPAlgorithms are the proof algorithms accepted (empty:
	// dpop.DefaultAlgorithms; asymmetric ones only). They are published as
	// dpop_signing_alg_values_supported.
	DPoPAlgorithms []string
	// DPoPMaxAge is how long after its iat a proof is accepted (0: 60s);
	// it is also how long a proof's jti is remembered against replay.
	DPoPMaxAge time.Duration
	// DPoPNonce requires a server nonce (DPoP-Nonce) in refresh proofs.
	DPoPNonce bool
	// DPoPNonceSecret is the key of the nonces (at least 32 bytes). Replicas
	// must share it; empty: a random one per process (one replica only).
	DPoPNonceSecret []byte
	// DPoPNonceLifetime is how long a nonce is accepted (0: 5 minutes).
	DPoPNonceLifetime time.Duration
	// DPoPReplayCacheBytes bounds the memory of proofs seen (0: 4 MiB).
	DPoPReplayCacheBytes int64
	// DPoPSigninURLs are the login URLs whose proofs a login backend may
	// forward to POST /v1/sessions (the proof's htu must be one of them, or
	// the refresher's own /v1/sessions URL).
	DPoPSigninURLs []string
	// ExternalURL is the refresher's base URL as browsers address it (e.g.
	// https://app.example.com/auth): the htu of a refresh proof is it plus
	// /v1/token. Empty: the request's own scheme (TLS or not) and Host, for
	// direct and development use.
	ExternalURL string
	// BindNetwork puts the client address into each access token as cnf.ip:
	// at sign-in the client_ip the login backend passes, at a refresh the
	// address of the refresh request (ClientIPHeader).
	BindNetwork bool
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
		DPoP:                  DPoPOptional,
		DPoPAlgorithms:        slices.Clone(dpop.DefaultAlgorithms),
		DPoPMaxAge:            60 * time.Second,
		DPoPNonceLifetime:     5 * time.Minute,
		DPoPReplayCacheBytes:  4 << 20,
	}
}

func (m DPoPMode) orDefault() DPoPMode {
	if m == "" {
		return DPoPOptional
	}
	return m
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
	c.validateDPoP(bad)
	return errors.Join(errs...)
}

func (c Config) validateDPoP(bad func(field, format string, args ...any)) {
	switch c.DPoP {
	case "", DPoPOff, DPoPOptional, DPoPRequired:
	default:
		bad("DPoP", "must be off, optional or required, got %q", c.DPoP)
	}
	for i, a := range c.DPoPAlgorithms {
		if !slices.Contains(dpop.DefaultAlgorithms, a) {
			bad(fmt.Sprintf("DPoPAlgorithms[%d]", i), "%q is not an asymmetric JWS algorithm (one of %s)", a, strings.Join(dpop.DefaultAlgorithms, ", "))
		}
	}
	if c.DPoPMaxAge < 0 {
		bad("DPoPMaxAge", "must not be negative")
	}
	if c.DPoPNonceLifetime < 0 {
		bad("DPoPNonceLifetime", "must not be negative")
	}
	if c.DPoPReplayCacheBytes < 0 {
		bad("DPoPReplayCacheBytes", "must not be negative")
	}
	if n := len(c.DPoPNonceSecret); n > 0 && n < 32 {
		bad("DPoPNonceSecret", "must be at least 32 bytes, got %d", n)
	}
	for i, u := range c.DPoPSigninURLs {
		if !absoluteHTTP(u) {
			bad(fmt.Sprintf("DPoPSigninURLs[%d]", i), "must be an absolute http(s) URL without query or fragment, got %q", u)
		}
	}
	if c.ExternalURL != "" && !absoluteHTTP(c.ExternalURL) {
		bad("ExternalURL", "must be an absolute http(s) URL without query or fragment, like https://app.example.com/auth, got %q", c.ExternalURL)
	}
}

// absoluteHTTP reports whether s is an absolute http or https URL with a
// host and no user info, query or fragment.
func absoluteHTTP(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil &&
		u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" && !strings.Contains(s, "#")
}

// validJKT reports whether s has the form of an RFC 7638 SHA-256
// thumbprint: 43 base64url characters without padding (32 bytes).
func validJKT(s string) bool {
	if len(s) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}
