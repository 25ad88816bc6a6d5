package extauthz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the whole extauthz configuration, read from YAML (--config) or
// built from the one-provider flags. Field comments are the reference; every
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
	// Authorization names the claims that roles_any and scopes_all read.
	Authorization AuthorizationConfig `json:"authorization,omitempty"`
	// CORS lets browsers read denials and lets preflights through.
	CORS CORSConfig `json:"cors,omitempty"`
	// Realm is the realm of `WWW-Authenticate: Bearer realm="…"`. Default "tokengate".
	Realm string `json:"realm,omitempty"`
	// Cache is the verified-token cache.
	Cache CacheConfig `json:"cache,omitempty"`
}

// Provider is one issuer and where its keys come from: exactly one of
// JWKSURL, JWKSFile, JWKS (inline), or only HMACSecret/HMACSecretFile.
type Provider struct {
	// Name labels metrics and logs. Default: the issuer.
	Name string `json:"name,omitempty"`
	// Issuer must equal the token's `iss`.
	Issuer string `json:"issuer"`
	// Audiences: the token's `aud` must contain at least one.
	Audiences []string `json:"audiences"`
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
	// Defaults 5m and 1h.
	RefreshMinInterval Duration `json:"refresh_min_interval,omitempty"`
	RefreshMaxInterval Duration `json:"refresh_max_interval,omitempty"`
	// KidRefetchInterval limits refetches caused by an unknown kid to one per
	// interval. Default 30s.
	KidRefetchInterval Duration `json:"kid_refetch_interval,omitempty"`
	// FetchTimeout bounds one JWKS fetch. Default 10s.
	FetchTimeout Duration `json:"fetch_timeout,omitempty"`
	// FilePollInterval is how often JWKSFile is checked for changes. Default 5s.
	FilePollInterval Duration `json:"file_poll_interval,omitempty"`
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
	// access-control-allow-* headers on denials.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// AllowCredentials adds access-control-allow-credentials: true. Default true.
	AllowCredentials *bool `json:"allow_credentials,omitempty"`
	// AllowPreflight lets CORS preflights (OPTIONS with Origin and
	// Access-Control-Request-Method) through without a token. Default true.
	AllowPreflight *bool `json:"allow_preflight,omitempty"`
}

// CacheConfig: the verified-token cache.
type CacheConfig struct {
	// Size is the number of verified tokens kept. Default 10000.
	Size int `json:"size,omitempty"`
	// Disabled turns the cache off (every check verifies the signature).
	Disabled bool `json:"disabled,omitempty"`
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
	DefaultFetchTimeout       = 10 * time.Second
	DefaultFilePollInterval   = 5 * time.Second
	DefaultCacheSize          = 10000
	DefaultExpiresInHeader    = "x-token-expires-in"
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
// are errors, so a typo never silently turns a check off.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("decode config: %w", err)
	}
	return c, nil
}

// LoadConfig reads and decodes a config file (it does not validate it).
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
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
	if c.Cache.Size == 0 {
		c.Cache.Size = DefaultCacheSize
	}
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
	def(&p.RefreshMinInterval, DefaultRefreshMinInterval)
	def(&p.RefreshMaxInterval, DefaultRefreshMaxInterval)
	def(&p.KidRefetchInterval, DefaultKidRefetchInterval)
	def(&p.FetchTimeout, DefaultFetchTimeout)
	def(&p.FilePollInterval, DefaultFilePollInterval)
	return p
}

// Header names a mapping may never set: hop-by-hop, routing and
// credential headers whose rewriting would change what the request is.
var reservedHeaders = map[string]bool{
	"host": true, "authorization": true, "cookie": true, "content-length": true,
	"content-type": true, "transfer-encoding": true, "connection": true, "te": true,
	"upgrade": true, "proxy-authorization": true, "keep-alive": true,
}

// Validate reports every problem in the configuration, each with its path,
// joined into one error. It has no side effects (it does not read files or
// fetch URLs); defaults are applied before checking.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if len(c.Providers) == 0 {
		add("providers", "at least one provider is required")
	}
	issuers := map[string]int{}
	names := map[string]int{}
	for i, p := range c.Providers {
		path := fmt.Sprintf("providers[%d]", i)
		p.validate(path, add)
		dupIssuer := false
		if p.Issuer != "" {
			if j, dup := issuers[p.Issuer]; dup {
				add(path+".issuer", "duplicates providers[%d].issuer", j)
				dupIssuer = true
			}
			issuers[p.Issuer] = i
		}
		// The name defaults to the issuer: a duplicate issuer is reported once.
		if j, dup := names[p.Name]; dup && p.Name != "" && !dupIssuer {
			add(path+".name", "duplicates providers[%d].name", j)
		}
		names[p.Name] = i
	}
	if c.MaxTokenBytes < 0 {
		add("max_token_bytes", "must be positive")
	}
	if c.Token.Cookie != "" && !validToken(c.Token.Cookie) {
		add("token.cookie", "%q is not a valid cookie name", c.Token.Cookie)
	}
	c.validateHeaders(add)
	if !validAction(c.DefaultAction) {
		add("default_action", "must be public, optional or required, not %q", c.DefaultAction)
	}
	for i, r := range c.Routes {
		r.validate(fmt.Sprintf("routes[%d]", i), add)
	}
	if err := checkClaimPath(c.Authorization.RolesClaim); err != nil {
		add("authorization.roles_claim", "%v", err)
	}
	if err := checkClaimPath(c.Authorization.ScopesClaim); err != nil {
		add("authorization.scopes_claim", "%v", err)
	}
	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			add(fmt.Sprintf("cors.allowed_origins[%d]", i), "%q is not an origin like https://app.example.com", o)
		}
	}
	if c.Cache.Size < 0 {
		add("cache.size", "must be positive")
	}
	if strings.ContainsAny(c.Realm, "\"\\\r\n") {
		add("realm", "must not contain quotes, backslashes or line breaks")
	}
	return errors.Join(errs...)
}

func (p Provider) validate(path string, add func(string, string, ...any)) {
	if p.Issuer == "" {
		add(path+".issuer", "is required")
	}
	if len(p.Audiences) == 0 {
		add(path+".audiences", "at least one audience is required")
	}
	for i, a := range p.Audiences {
		if a == "" {
			add(fmt.Sprintf("%s.audiences[%d]", path, i), "must not be empty")
		}
	}
	sources := 0
	for _, set := range []bool{p.JWKSURL != "", p.JWKSFile != "", len(p.JWKS) > 0} {
		if set {
			sources++
		}
	}
	hasSecret := p.HMACSecret != "" || p.HMACSecretFile != ""
	switch {
	case sources > 1:
		add(path, "set only one of jwks_url, jwks_file and jwks")
	case sources == 0 && !hasSecret:
		add(path, "one of jwks_url, jwks_file, jwks or hmac_secret(_file) is required")
	}
	if p.HMACSecret != "" && p.HMACSecretFile != "" {
		add(path, "set only one of hmac_secret and hmac_secret_file")
	}
	if p.HMACSecret != "" && len(p.HMACSecret) < 32 {
		add(path+".hmac_secret", "must be at least 32 bytes for HS256")
	}
	if p.JWKSURL != "" {
		u, err := url.Parse(p.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(path+".jwks_url", "must be an http or https URL, not %q", p.JWKSURL)
		}
	}
	if len(p.JWKS) > 0 {
		var probe struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(p.JWKS, &probe); err != nil || len(probe.Keys) == 0 {
			add(path+".jwks", "must be a JWK set object with a non-empty keys list")
		}
	}
	if len(p.Algorithms) == 0 {
		add(path+".algorithms", "must not be empty")
	}
	for i, a := range p.Algorithms {
		apath := fmt.Sprintf("%s.algorithms[%d]", path, i)
		switch {
		case strings.EqualFold(a, "none"):
			add(apath, "none is never accepted")
		case a == "HS256":
			if !hasSecret {
				add(apath, "HS256 needs hmac_secret or hmac_secret_file")
			}
		case !supportedAlg(a):
			add(apath, "unsupported algorithm %q (use ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA, HS256)", a)
		}
	}
	if hasSecret && !contains(p.Algorithms, "HS256") {
		add(path+".algorithms", "an HMAC secret is configured but HS256 is not allowed")
	}
	if p.Leeway.Duration < 0 || p.Leeway.Duration > 5*time.Minute {
		add(path+".leeway", "must be between 0 and 5m")
	}
	if p.MaxLifetime.Duration < 0 {
		add(path+".max_lifetime", "must not be negative")
	}
	if p.RefreshMinInterval.Duration < time.Second {
		add(path+".refresh_min_interval", "must be at least 1s")
	}
	if p.RefreshMaxInterval.Duration < p.RefreshMinInterval.Duration {
		add(path+".refresh_max_interval", "must not be below refresh_min_interval")
	}
	if p.KidRefetchInterval.Duration < 0 {
		add(path+".kid_refetch_interval", "must not be negative")
	}
	if p.FetchTimeout.Duration <= 0 {
		add(path+".fetch_timeout", "must be positive")
	}
	if p.FilePollInterval.Duration <= 0 {
		add(path+".file_poll_interval", "must be positive")
	}
}

func (c Config) validateHeaders(add func(string, string, ...any)) {
	seen := map[string]string{}
	claim := func(name, path string) {
		lname := strings.ToLower(name)
		switch {
		case name == "" || !validToken(name):
			add(path, "%q is not a valid header name", name)
		case reservedHeaders[lname] || strings.HasPrefix(lname, ":"):
			add(path, "%q cannot be set by extauthz", name)
		default:
			if other, dup := seen[lname]; dup {
				add(path, "header %q is also set by %s", name, other)
			}
			seen[lname] = path
		}
	}
	for i, m := range c.Headers.Identity {
		path := fmt.Sprintf("headers.identity[%d]", i)
		claim(m.Name, path+".name")
		if err := checkClaimPath(m.Claim); err != nil {
			add(path+".claim", "%v", err)
		}
	}
	if c.Headers.PayloadHeader != "" {
		claim(c.Headers.PayloadHeader, "headers.payload_header")
	}
	if !validToken(c.Headers.ExpiresInHeader) {
		add("headers.expires_in_header", "%q is not a valid header name", c.Headers.ExpiresInHeader)
	}
	switch c.Headers.Encoding {
	case "percent", "rfc2047":
	default:
		add("headers.encoding", "must be percent or rfc2047, not %q", c.Headers.Encoding)
	}
}

func (r Route) validate(path string, add func(string, string, ...any)) {
	if !validAction(r.Action) {
		add(path+".action", "must be public, optional or required, not %q", r.Action)
	}
	if r.Path != "" && r.PathPrefix != "" {
		add(path, "set only one of path and path_prefix")
	}
	if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
		add(path+".path", "must start with /")
	}
	if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
		add(path+".path_prefix", "must start with /")
	}
	if r.Host != "" && (strings.ContainsAny(r.Host, "/ ") || strings.Count(r.Host, "*") > 1 || (strings.Contains(r.Host, "*") && !strings.HasPrefix(r.Host, "*."))) {
		add(path+".host", "%q is not a host or *.domain", r.Host)
	}
	for i, m := range r.Methods {
		if m == "" || m != strings.ToUpper(m) || !validToken(m) {
			add(fmt.Sprintf("%s.methods[%d]", path, i), "%q is not an upper-case method", m)
		}
	}
	if r.Action != ActionRequired && (len(r.RolesAny) > 0 || len(r.ScopesAll) > 0) {
		add(path, "roles_any and scopes_all need action: required")
	}
}

func validAction(a Action) bool {
	return a == ActionPublic || a == ActionOptional || a == ActionRequired
}

// validToken reports whether s is an RFC 9110 token (header, cookie and
// method names).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func checkClaimPath(p string) error {
	if p == "" {
		return errors.New("must name a claim")
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return fmt.Errorf("%q has an empty segment", p)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
