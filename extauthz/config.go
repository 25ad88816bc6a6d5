package extauthz

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tokengate/tokengate/internal/dpop"
)

// Config is the whole extauthz configuration, read from a YAML file or
// built by a command from its own settings. Field comments are the reference; every
// field is described in docs/extauthz.md. Zero values mean "the default".
type Config struct {
	// Providers are the token issuers accepted; a token's `iss` picks one.
	Providers []Provider `json:"providers"`
	// MaxTokenBytes: a longer token is refused as invalid_token before it is
	// parsed. Default 8192.
	MaxTokenBytes int `json:"max_token_bytes,omitempty"`
	// Token says where, besides `Authorization: Bearer`, a token may come from.
	Token TokenConfig `json:"token,omitempty"`
	// Headers configures the identity headers sent upstream.
	Headers HeaderConfig `json:"headers,omitempty"`
	// Routes are matched in order; the first match decides. No match uses
	// DefaultAction.
	Routes []Route `json:"routes,omitempty"`
	// DefaultAction for requests no route matches: required (default),
	// optional or public.
	DefaultAction Action `json:"default_action,omitempty"`
	// Apps are further rule sets served by the same extauthz, each chosen
	// by one of Envoy's per-route check_settings.context_extensions (gRPC)
	// or by forward_auth.app_header (HTTP). Routes, DefaultAction and
	// Headers above are the default app: the one a request without a
	// selector gets. A selector naming no app is denied (unknown_app).
	Apps []App `json:"apps,omitempty"`
	// Authorization names the claims that roles_any and scopes_all read.
	Authorization AuthorizationConfig `json:"authorization,omitempty"`
	// CORS lets browsers read denials and lets preflights through.
	CORS CORSConfig `json:"cors,omitempty"`
	// ForwardAuth says which proxy sends HTTP forward-auth requests, and so
	// which headers describe the original request.
	ForwardAuth ForwardAuthConfig `json:"forward_auth,omitempty"`
	// Realm is the realm of `WWW-Authenticate: Bearer realm="…"`. Default "tokengate".
	Realm string `json:"realm,omitempty"`
	// Cache is the verified-token cache.
	Cache CacheConfig `json:"cache,omitempty"`
	// Logs bounds the volume of check logs.
	Logs LogsConfig `json:"logs,omitempty"`
	// DPoP configures the checks of DPoP proofs (RFC 9449) that a token
	// bound to a key (its `cnf.jkt` claim) needs on every request. No
	// setting is needed for bound tokens to work; routes may require them
	// (routes[].dpop).
	DPoP DPoPConfig `json:"dpop,omitempty"`
}

// DPoPConfig: how DPoP proofs are checked. A token whose claims carry
// `cnf.jkt` is accepted only with `Authorization: DPoP <token>` and a
// `DPoP` header holding a valid proof signed by that key, whatever these
// settings say.
type DPoPConfig struct {
	// Algorithms is the allowlist of proof signature algorithms. Default
	// ES256, ES384, ES512, PS256, PS384, PS512, RS256, RS384, RS512,
	// EdDSA; `none` and HMAC algorithms cannot be listed.
	Algorithms []string `json:"algorithms,omitempty"`
	// MaxAge is how long after its `iat` a proof is accepted. Default 60s.
	MaxAge Duration `json:"max_age,omitempty"`
	// MaxSkew is how far in the future a proof's `iat` may be. Default 5s.
	MaxSkew Duration `json:"max_skew,omitempty"`
	// ReplayCacheBytes bounds the memory of the cache of proofs already
	// seen (a proof's `jti` is accepted once per replica within MaxAge).
	// Default 4 MiB.
	ReplayCacheBytes int64 `json:"replay_cache_bytes,omitempty"`
	// ExternalOrigin, when set (e.g. "https://api.example.com"), is the
	// scheme and host of every proof's `htu`: set it when the scheme or
	// host extauthz sees is not the one the browser used. Without it htu
	// is the check's scheme, host and path.
	ExternalOrigin string `json:"external_origin,omitempty"`
	// Nonce makes every proof carry a nonce the server issued (RFC 9449
	// §8): pre-generated proofs become useless and the replay window across
	// replicas is bounded by the nonce lifetime.
	Nonce DPoPNonceConfig `json:"nonce,omitempty"`
}

// DPoPNonceConfig: server-issued DPoP nonces.
type DPoPNonceConfig struct {
	// Enabled requires a valid server nonce in every proof; a proof
	// without one is answered use_dpop_nonce with a `DPoP-Nonce` header.
	Enabled bool `json:"enabled,omitempty"`
	// SecretFile holds the secret nonces are authenticated with (at least
	// 32 bytes, trailing newline ignored). Replicas must share it (and the
	// refresher may use the same one). Omitted: a random secret per
	// process, fine for one replica only.
	SecretFile string `json:"secret_file,omitempty"`
	// Lifetime is how long a nonce is accepted. Default 5m; a proof whose
	// nonce is past half of it is accepted and a fresh nonce is sent back.
	Lifetime Duration `json:"lifetime,omitempty"`
}

// AppDPoP is an app's own DPoP setting.
type AppDPoP struct {
	// ExternalOrigin replaces dpop.external_origin for this app.
	ExternalOrigin string `json:"external_origin,omitempty"`
}

// BindNetwork requires the request to come from the network the token
// was issued to: the client address and the token's `cnf.ip` must be of
// the same family and agree on the first prefix bits.
type BindNetwork struct {
	// IPv4Prefix is the number of leading bits of an IPv4 address
	// compared (0-32). Default 32 (the exact address).
	IPv4Prefix *int `json:"ipv4_prefix,omitempty"`
	// IPv6Prefix is the number of leading bits of an IPv6 address
	// compared (0-128). Default 64.
	IPv6Prefix *int `json:"ipv6_prefix,omitempty"`
}

// BindDevice requires the request to carry the device identifier the
// token was issued for: base64url(SHA-256(value)) must equal its
// `cnf.dev`. Exactly one of Cookie and Header.
type BindDevice struct {
	// Cookie is the name of the cookie holding the device identifier.
	Cookie string `json:"cookie,omitempty"`
	// Header is the name of the request header holding it.
	Header string `json:"header,omitempty"`
}

// Provider is one issuer and where its keys come from: exactly one of
// Discovery, JWKSURL, JWKSFile, JWKS (inline), or only
// HMACSecret/HMACSecretFile.
type Provider struct {
	// Name labels metrics and logs. Default: the issuer.
	Name string `json:"name,omitempty"`
	// Issuer must equal the token's `iss`.
	Issuer string `json:"issuer"`
	// Audiences: the token's `aud` must contain at least one.
	Audiences []string `json:"audiences"`
	// Discovery, when true, finds the keys from the issuer alone: the
	// document at {issuer}/.well-known/openid-configuration (OIDC Discovery
	// 1.0 §4) is fetched and refreshed like a JWKS, its `issuer` must equal
	// Issuer exactly, and its `jwks_uri` (same scheme as the issuer) is the
	// key source; a changed jwks_uri is followed. Where the document lists
	// id_token_signing_alg_values_supported, Algorithms is narrowed to the
	// algorithms in both lists (never widened). Excludes jwks_url,
	// jwks_file, jwks and hmac_secret(_file).
	Discovery bool `json:"discovery,omitempty"`
	// JWKSURL is fetched at start (with retry and backoff) and refreshed in
	// the background; http or https.
	JWKSURL string `json:"jwks_url,omitempty"`
	// JWKSFile is a JWKS file, re-read when it changes.
	JWKSFile string `json:"jwks_file,omitempty"`
	// JWKS is an inline key set (a JSON object with `keys`).
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// HMACSecret enables HS256 with this shared secret (≥ 32 bytes). Prefer
	// HMACSecretFile so the secret stays out of the config file.
	HMACSecret string `json:"hmac_secret,omitempty"`
	// HMACSecretFile holds the HS256 secret (trailing newline ignored).
	HMACSecretFile string `json:"hmac_secret_file,omitempty"`
	// Algorithms is the allowlist. Default ES256, ES384, RS256, PS256, EdDSA.
	// HS256 may be listed only with an HMAC secret; `none` never.
	Algorithms []string `json:"algorithms,omitempty"`
	// Leeway for exp, nbf and iat. Default 30s.
	Leeway *Duration `json:"leeway,omitempty"`
	// MaxLifetime, when set, refuses tokens whose exp − iat exceeds it.
	MaxLifetime Duration `json:"max_lifetime,omitempty"`
	// RequireTypATJWT refuses tokens whose header typ is not `at+jwt`
	// (RFC 9068), so ID tokens cannot be used as access tokens.
	RequireTypATJWT bool `json:"require_typ_at_jwt,omitempty"`
	// RefreshMinInterval and RefreshMaxInterval bound the background JWKS
	// refresh; within them the response's Cache-Control max-age decides.
	// RefreshMaxInterval is also the bound on how long a key removed from
	// the JWKS keeps verifying (its cached tokens are dropped at the refresh
	// that removes it). Defaults 5m and 1h; a RefreshMaxInterval below 5m
	// set alone brings RefreshMinInterval down to it.
	RefreshMinInterval Duration `json:"refresh_min_interval,omitempty"`
	RefreshMaxInterval Duration `json:"refresh_max_interval,omitempty"`
	// KidRefetchInterval: a token whose kid is not in the key set makes the
	// JWKS be fetched again; the same kid does so at most once per interval
	// (a kid still absent from a fetch that started after it was first seen
	// is invalid_token until then). Per kid, in a bounded set. Default 30s.
	KidRefetchInterval Duration `json:"kid_refetch_interval,omitempty"`
	// KidRefetchMinGap is the ceiling over all kids: unknown-kid refetches
	// of the provider start at least this far apart. A new key is picked up
	// within it even while junk kids arrive (every fetch loads the whole
	// set); meanwhile its tokens get UNAVAILABLE, never invalid_token.
	// Default 1s.
	KidRefetchMinGap Duration `json:"kid_refetch_min_gap,omitempty"`
	// KidRefetchWait bounds how long a check with an unknown kid waits for
	// its refetch before answering UNAVAILABLE; the fetch itself goes on in
	// the background (up to FetchTimeout). Default 100ms, below Envoy's
	// default ext_authz timeout of 200ms.
	KidRefetchWait Duration `json:"kid_refetch_wait,omitempty"`
	// FetchTimeout bounds one JWKS fetch. Default 10s.
	FetchTimeout Duration `json:"fetch_timeout,omitempty"`
	// FilePollInterval is how often JWKSFile is checked for changes. Default 5s.
	FilePollInterval Duration `json:"file_poll_interval,omitempty"`
	// AllowedRoles, when set, limits what this issuer may assert: a token
	// whose roles (authorization.roles_claim) hold anything not listed is
	// refused as invalid_token, so a partner IdP cannot mint `admin` for
	// your routes. An empty list allows no roles at all; omitted, any.
	AllowedRoles []string `json:"allowed_roles"`
	// SubjectPrefix, when set, must begin every `sub` this issuer asserts
	// (e.g. "partner|"): its subjects can never collide with another
	// provider's users. A token whose sub lacks it is invalid_token.
	SubjectPrefix string `json:"subject_prefix,omitempty"`
}

// TokenConfig: additional places a token may come from.
type TokenConfig struct {
	// Cookie, when set, is a cookie name read when there is no Authorization header.
	Cookie string `json:"cookie,omitempty"`
	// QueryParam, when set, is a query parameter read last (for EventSource
	// and WebSocket, which cannot send headers). Off by default: URLs end up in logs.
	QueryParam string `json:"query_param,omitempty"`
	// RemoveAuthorizationHeader strips `authorization` before the request
	// goes upstream (when the token came from it).
	RemoveAuthorizationHeader bool `json:"remove_authorization_header,omitempty"`
}

// HeaderConfig: identity headers.
type HeaderConfig struct {
	// Identity maps claims to upstream headers. Omitted: x-user-id ← sub,
	// x-user-name ← name, x-user-roles ← roles, x-session-id ← sid. An
	// empty list sets none.
	Identity []HeaderMapping `json:"identity,omitempty"`
	// Encoding of values that are not plain printable ASCII: "percent"
	// (default, RFC 3986 percent-encoding of the UTF-8 bytes; `%` itself is
	// encoded too, so decoding is always lossless) or "rfc2047"
	// (`=?UTF-8?b?…?=` encoded-words).
	Encoding string `json:"encoding,omitempty"`
	// PayloadHeader, when set, carries the whole verified JWT payload,
	// base64url without padding.
	PayloadHeader string `json:"payload_header,omitempty"`
	// ExpiresInHeader is the response header telling the client the
	// seconds left on its token. Default x-token-expires-in.
	ExpiresInHeader string `json:"expires_in_header,omitempty"`
}

// HeaderMapping sets header Name from the claim at the dotted path Claim.
type HeaderMapping struct {
	Name  string `json:"name"`
	Claim string `json:"claim"`
}

// Route matches requests to an action. Empty fields match anything.
type Route struct {
	// Host is an exact host (port ignored) or "*.example.com".
	Host string `json:"host,omitempty"`
	// Path matches exactly; PathPrefix is a string prefix ("/api/"). At most one.
	Path       string `json:"path,omitempty"`
	PathPrefix string `json:"path_prefix,omitempty"`
	// Methods, upper case; empty means any.
	Methods []string `json:"methods,omitempty"`
	// Action: public, optional or required.
	Action Action `json:"action"`
	// RolesAny (required routes): the roles claim must hold one of these.
	RolesAny []string `json:"roles_any,omitempty"`
	// ScopesAll (required routes): the scopes claim must hold all of these.
	ScopesAll []string `json:"scopes_all,omitempty"`
	// ContextExtensions, when set, must all be among the CheckRequest's
	// context_extensions (Envoy's per-route check_settings), key and value
	// equal. Forward-auth requests have none, so such a route never
	// matches them.
	ContextExtensions map[string]string `json:"context_extensions,omitempty"`
	// DPoP: "required" refuses tokens that are not DPoP-bound (no
	// `cnf.jkt`) on this route; "optional" (default) accepts Bearer tokens
	// too. A bound token needs its proof everywhere.
	DPoP string `json:"dpop,omitempty"`
	// BindNetwork, when set, requires the client address to be in the
	// token's network (`cnf.ip`); otherwise token_unbound.
	BindNetwork *BindNetwork `json:"bind_network,omitempty"`
	// BindDevice, when set, requires the token's device identifier
	// (`cnf.dev`) on the request; otherwise token_unbound.
	BindDevice *BindDevice `json:"bind_device,omitempty"`
}

// Route DPoP settings (routes[].dpop).
const (
	DPoPOptional = "optional"
	DPoPRequired = "required"
)

// App is a rule set of its own, for one of several apps behind one
// extauthz. Token sources, providers, CORS, the cache and the header
// encoding are shared by every app.
type App struct {
	// Name labels the app in logs and is what forward_auth.app_header
	// carries. Unique; "default" is the top-level rule set.
	Name string `json:"name"`
	// Match selects the app.
	Match AppMatch `json:"match"`
	// Routes are matched in order, like the top-level routes.
	Routes []Route `json:"routes,omitempty"`
	// DefaultAction for requests none of Routes matches. Default required
	// (not inherited from the top level).
	DefaultAction Action `json:"default_action,omitempty"`
	// Audiences, when set, replace every provider's audiences for this
	// app: a token's `aud` must contain one of these instead.
	Audiences []string `json:"audiences,omitempty"`
	// Headers, when set, replaces the identity mapping for this app;
	// omitted fields are the top-level ones.
	Headers *AppHeaders `json:"headers,omitempty"`
	// DPoP, when set, overrides top-level dpop settings for this app.
	DPoP *AppDPoP `json:"dpop,omitempty"`
}

// AppMatch says which requests an app serves.
type AppMatch struct {
	// ContextExtensions is exactly one key and value of Envoy's per-route
	// check_settings.context_extensions, e.g. {app: web}. Every app uses
	// the same key, so a request finds its app with one lookup.
	ContextExtensions map[string]string `json:"context_extensions"`
}

// AppHeaders is an app's identity header mapping.
type AppHeaders struct {
	// Identity maps claims to upstream headers, as headers.identity.
	// Omitted: the top-level mapping; an empty list sets none.
	Identity []HeaderMapping `json:"identity,omitempty"`
	// PayloadHeader, as headers.payload_header. Omitted: the top-level one.
	PayloadHeader string `json:"payload_header,omitempty"`
}

// Action is what a route needs.
type Action string

// Route actions.
const (
	ActionPublic   Action = "public"
	ActionOptional Action = "optional"
	ActionRequired Action = "required"
)

// AuthorizationConfig names the claims (dotted paths) holding roles and scopes.
type AuthorizationConfig struct {
	// RolesClaim, default "roles" (e.g. "realm_access.roles" for Keycloak).
	RolesClaim string `json:"roles_claim,omitempty"`
	// ScopesClaim, default "scope": a space-separated string or an array.
	ScopesClaim string `json:"scopes_claim,omitempty"`
}

// CORSConfig: browsers must be able to read a 401.
type CORSConfig struct {
	// AllowedOrigins (exact, e.g. "https://app.example.com", or "*") get
	// access-control-allow-* headers on denials. "*" needs
	// allow_credentials: false. The origin "null" (sandboxed frames, file:
	// pages, some redirects) is never allowed.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// AllowCredentials adds access-control-allow-credentials: true. Default true.
	AllowCredentials *bool `json:"allow_credentials,omitempty"`
	// AllowPreflight lets CORS preflights (OPTIONS with Origin and
	// Access-Control-Request-Method, the Origin allowed when AllowedOrigins
	// is set) through without a token. Default true.
	AllowPreflight *bool `json:"allow_preflight,omitempty"`
}

// ForwardAuthConfig: the HTTP forward-auth endpoint (/authz/).
type ForwardAuthConfig struct {
	// Proxy names the proxy in front of extauthz, and so the one header
	// convention trusted to describe the original request; the others are
	// never read:
	//   - envoy (default): Envoy's HTTP ext_authz mode; the auth request's
	//     own method, path (after /authz) and Host; no X-* header is read.
	//   - nginx: auth_request; X-Original-Method, X-Original-URI and the
	//     auth request's Host (the proxy sets Host $host).
	//   - traefik, caddy: X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host.
	// A request without a header its convention requires is refused (400),
	// never judged as something else.
	Proxy string `json:"proxy,omitempty"`
	// AppHeader, when set, is the header whose value names the app (apps[].name)
	// of a forward-auth request; without it a request gets the default
	// app, and a name no app has is denied (unknown_app). It belongs to the
	// proxy family like the headers above: the proxy MUST set (overwrite)
	// it on every auth request, or a client chooses its own rules. Only
	// with proxy nginx, traefik or caddy (Envoy selects apps by
	// context_extensions over gRPC).
	AppHeader string `json:"app_header,omitempty"`
}

// Forward-auth proxies (forward_auth.proxy).
const (
	ProxyEnvoy   = "envoy"
	ProxyNginx   = "nginx"
	ProxyTraefik = "traefik"
	ProxyCaddy   = "caddy"
)

// CacheConfig: the verified-token cache, bounded by entries and by bytes
// (whichever is reached first).
type CacheConfig struct {
	// Size is the number of verified tokens kept. Default 10000.
	Size int `json:"size,omitempty"`
	// MaxBytes bounds the memory the cached tokens hold: the token, its
	// decoded claims and the prepared headers and answers, estimated per
	// entry. Default 64 MiB (fits a 256 MiB container).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// Disabled turns the cache off (every check verifies the signature).
	Disabled bool `json:"disabled,omitempty"`
}

// LogsConfig: check logs. Denials are logged at info and failures at warn,
// at most DenialsPerSecond lines a second; beyond that lines are dropped
// and counted (tokengate_extauthz_log_lines_dropped_total) and one summary
// line says how many. Metrics always count every check.
type LogsConfig struct {
	// DenialsPerSecond is the most denial and failure lines written per
	// second. Default 20.
	DenialsPerSecond int `json:"denials_per_second,omitempty"`
}

// Duration is a time.Duration written as "30s", "5m" in YAML.
type Duration struct{ time.Duration }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Defaults.
const (
	DefaultMaxTokenBytes      = 8192
	DefaultLeeway             = 30 * time.Second
	DefaultRefreshMinInterval = 5 * time.Minute
	DefaultRefreshMaxInterval = time.Hour
	DefaultKidRefetchInterval = 30 * time.Second
	DefaultKidRefetchMinGap   = time.Second
	DefaultKidRefetchWait     = 100 * time.Millisecond
	DefaultFetchTimeout       = 10 * time.Second
	DefaultFilePollInterval   = 5 * time.Second
	DefaultCacheSize          = 10000
	DefaultCacheMaxBytes      = 64 << 20
	DefaultDenialsPerSecond   = 20
	DefaultExpiresInHeader    = "x-token-expires-in"
	DefaultDPoPMaxAge         = 60 * time.Second
	DefaultDPoPMaxSkew        = 5 * time.Second
	DefaultDPoPReplayBytes    = 4 << 20
	DefaultDPoPNonceLifetime  = 5 * time.Minute
	DefaultBindIPv4Prefix     = 32
	DefaultBindIPv6Prefix     = 64
)

// DefaultAlgorithms is the allowlist when a provider lists none.
var DefaultAlgorithms = []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"}

// DefaultIdentityHeaders is the claim mapping when none is configured.
func DefaultIdentityHeaders() []HeaderMapping {
	return []HeaderMapping{
		{Name: "x-user-id", Claim: "sub"},
		{Name: "x-user-name", Claim: "name"},
		{Name: "x-user-roles", Claim: "roles"},
		{Name: "x-session-id", Claim: "sid"},
	}
}

// ParseConfig decodes YAML (or JSON) strictly: unknown or duplicate fields
// are errors, so a typo never silently turns a check off. On an error it
// returns a *DecodeError listing every problem with its path, and what
// could be decoded (the problems left out), so a caller such as
// validate-config can go on and run Validate on the rest.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err == nil {
		return c, nil
	} else if de := decodeProblems(data, reflect.TypeFor[Config]()); len(de.Problems) > 0 {
		var partial Config
		if !de.Syntax {
			_ = yaml.Unmarshal(data, &partial) // best effort: its problems are listed in de
		}
		return partial, de
	} else {
		// Something the walk does not model: the decoder's own word.
		return Config{}, &DecodeError{Problems: []error{fmt.Errorf("decode config: %w", err)}, Syntax: true}
	}
}

// LoadConfig reads and decodes a config file (it does not validate it).
// Decode problems come as a *DecodeError (see ParseConfig) wrapped with the
// file's name.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// WithDefaults returns c with every zero value replaced by its default.
func (c Config) WithDefaults() Config {
	if c.MaxTokenBytes == 0 {
		c.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if c.DefaultAction == "" {
		c.DefaultAction = ActionRequired
	}
	if c.Realm == "" {
		c.Realm = "tokengate"
	}
	if c.Headers.Identity == nil {
		c.Headers.Identity = DefaultIdentityHeaders()
	}
	if c.Headers.Encoding == "" {
		c.Headers.Encoding = "percent"
	}
	if c.Headers.ExpiresInHeader == "" {
		c.Headers.ExpiresInHeader = DefaultExpiresInHeader
	}
	if c.Authorization.RolesClaim == "" {
		c.Authorization.RolesClaim = "roles"
	}
	if c.Authorization.ScopesClaim == "" {
		c.Authorization.ScopesClaim = "scope"
	}
	yes := true
	if c.CORS.AllowCredentials == nil {
		c.CORS.AllowCredentials = &yes
	}
	if c.CORS.AllowPreflight == nil {
		c.CORS.AllowPreflight = &yes
	}
	if c.ForwardAuth.Proxy == "" {
		c.ForwardAuth.Proxy = ProxyEnvoy
	}
	if c.Cache.Size == 0 {
		c.Cache.Size = DefaultCacheSize
	}
	if c.Cache.MaxBytes == 0 {
		c.Cache.MaxBytes = DefaultCacheMaxBytes
	}
	if c.Logs.DenialsPerSecond == 0 {
		c.Logs.DenialsPerSecond = DefaultDenialsPerSecond
	}
	if c.DPoP.Algorithms == nil {
		c.DPoP.Algorithms = dpop.DefaultAlgorithms
	}
	if c.DPoP.MaxAge.Duration == 0 {
		c.DPoP.MaxAge.Duration = DefaultDPoPMaxAge
	}
	if c.DPoP.MaxSkew.Duration == 0 {
		c.DPoP.MaxSkew.Duration = DefaultDPoPMaxSkew
	}
	if c.DPoP.ReplayCacheBytes == 0 {
		c.DPoP.ReplayCacheBytes = DefaultDPoPReplayBytes
	}
	if c.DPoP.Nonce.Lifetime.Duration == 0 {
		c.DPoP.Nonce.Lifetime.Duration = DefaultDPoPNonceLifetime
	}
	apps := make([]App, len(c.Apps))
	for i, a := range c.Apps {
		if a.DefaultAction == "" {
			a.DefaultAction = ActionRequired
		}
		apps[i] = a
	}
	c.Apps = apps
	providers := make([]Provider, len(c.Providers))
	for i, p := range c.Providers {
		providers[i] = p.withDefaults()
	}
	c.Providers = providers
	return c
}

func (p Provider) withDefaults() Provider {
	if p.Name == "" {
		p.Name = p.Issuer
	}
	if p.Algorithms == nil {
		p.Algorithms = DefaultAlgorithms
		if p.HMACSecret != "" || p.HMACSecretFile != "" {
			p.Algorithms = append(append([]string(nil), DefaultAlgorithms...), "HS256")
		}
	}
	if p.Leeway == nil {
		p.Leeway = &Duration{DefaultLeeway}
	}
	def := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	if p.RefreshMinInterval.Duration == 0 && p.RefreshMaxInterval.Duration > 0 {
		p.RefreshMinInterval.Duration = min(DefaultRefreshMinInterval, p.RefreshMaxInterval.Duration)
	}
	def(&p.RefreshMinInterval, DefaultRefreshMinInterval)
	def(&p.RefreshMaxInterval, DefaultRefreshMaxInterval)
	def(&p.KidRefetchInterval, DefaultKidRefetchInterval)
	def(&p.KidRefetchMinGap, DefaultKidRefetchMinGap)
	def(&p.KidRefetchWait, DefaultKidRefetchWait)
	def(&p.FetchTimeout, DefaultFetchTimeout)
	def(&p.FilePollInterval, DefaultFilePollInterval)
	return p
}
