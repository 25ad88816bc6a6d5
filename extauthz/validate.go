package extauthz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// reservedHeaders are names a mapping (or the payload or expiry header)
// may never use, with the reason: setting them would change what the
// request is, where it goes, or what the proxy in front of the upstream
// tells it. Lower case.
var reservedHeaders = map[string]string{
	"host":                "routes the request",
	"authorization":       "carries credentials",
	"proxy-authorization": "carries credentials",
	"cookie":              "carries credentials",
	"set-cookie":          "sets cookies",
	"content-length":      "frames the message",
	"content-type":        "describes the body",
	"transfer-encoding":   "frames the message",
	"connection":          "is hop-by-hop",
	"keep-alive":          "is hop-by-hop",
	"te":                  "is hop-by-hop",
	"trailer":             "is hop-by-hop",
	"upgrade":             "is hop-by-hop",
	"forwarded":           "belongs to the proxy",
	"x-real-ip":           "belongs to the proxy",
}

// reservedPrefixes are name families a mapping may never use.
var reservedPrefixes = []struct{ prefix, why string }{
	{":", "is an HTTP/2 pseudo-header"},
	{"proxy-", "is hop-by-hop"},
	{"x-envoy-", "belongs to Envoy"},
	{"x-forwarded-", "belongs to the proxy"},
	{"x-original-", "belongs to the proxy (nginx auth_request)"},
}

// reservedHeader says why a lower-case header name is reserved ("" if not).
func reservedHeader(name string) string {
	if why, ok := reservedHeaders[name]; ok {
		return why
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			return p.why
		}
	}
	return ""
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
	c.validateHeaders(c.Headers, "headers", add)
	if !validAction(c.DefaultAction) {
		add("default_action", "must be public, optional or required, not %q", c.DefaultAction)
	}
	for i, r := range c.Routes {
		r.validate(fmt.Sprintf("routes[%d]", i), add)
	}
	c.validateApps(add)
	if err := checkClaimPath(c.Authorization.RolesClaim); err != nil {
		add("authorization.roles_claim", "%v", err)
	}
	if err := checkClaimPath(c.Authorization.ScopesClaim); err != nil {
		add("authorization.scopes_claim", "%v", err)
	}
	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			if *c.CORS.AllowCredentials {
				add(fmt.Sprintf("cors.allowed_origins[%d]", i), "\"*\" cannot be used with credentials (every site could read answers meant for the user); list exact origins or set cors.allow_credentials: false")
			}
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			add(fmt.Sprintf("cors.allowed_origins[%d]", i), "%q is not an origin like https://app.example.com", o)
		}
	}
	switch c.ForwardAuth.Proxy {
	case ProxyEnvoy, ProxyNginx, ProxyTraefik, ProxyCaddy:
	default:
		add("forward_auth.proxy", "must be envoy, nginx, traefik or caddy, not %q", c.ForwardAuth.Proxy)
	}
	if h := c.ForwardAuth.AppHeader; h != "" {
		lh := strings.ToLower(h)
		switch {
		case !validToken(h):
			add("forward_auth.app_header", "%q is not a valid header name", h)
		case reservedHeader(lh) != "":
			add("forward_auth.app_header", "%q is reserved: it %s", h, reservedHeader(lh))
		case lh == "origin" || lh == "access-control-request-method":
			add("forward_auth.app_header", "%q is the client's own header", h)
		case c.ForwardAuth.Proxy == ProxyEnvoy:
			add("forward_auth.app_header", "needs forward_auth.proxy nginx, traefik or caddy (Envoy selects apps with context_extensions over gRPC)")
		case len(c.Apps) == 0:
			add("forward_auth.app_header", "there are no apps to select")
		}
	}
	if c.Cache.Size < 0 {
		add("cache.size", "must be positive")
	}
	if c.Cache.MaxBytes < 0 {
		add("cache.max_bytes", "must be positive")
	}
	if c.Logs.DenialsPerSecond < 0 {
		add("logs.denials_per_second", "must be positive")
	}
	c.DPoP.validate("dpop", add)
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
	case p.Discovery:
		p.validateDiscovery(path, sources > 0, hasSecret, add)
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
	if p.KidRefetchMinGap.Duration < 0 {
		add(path+".kid_refetch_min_gap", "must not be negative")
	}
	if p.KidRefetchWait.Duration < 0 || p.KidRefetchWait.Duration > p.FetchTimeout.Duration {
		add(path+".kid_refetch_wait", "must be between 0 and fetch_timeout (%v)", p.FetchTimeout.Duration)
	}
	if p.FetchTimeout.Duration <= 0 {
		add(path+".fetch_timeout", "must be positive")
	}
	if p.FilePollInterval.Duration <= 0 {
		add(path+".file_poll_interval", "must be positive")
	}
	for i, r := range p.AllowedRoles {
		if r == "" {
			add(fmt.Sprintf("%s.allowed_roles[%d]", path, i), "must not be empty")
		}
	}
}

// validateDiscovery checks a provider with discovery: true. The issuer is
// the base of the document's URL, so it must be an absolute http(s) URL
// without query, fragment or credentials (RFC 8414 §2).
func (p Provider) validateDiscovery(path string, hasSource, hasSecret bool, add func(string, string, ...any)) {
	if hasSource {
		add(path+".discovery", "excludes jwks_url, jwks_file and jwks (the keys come from the discovered jwks_uri)")
	}
	if hasSecret {
		add(path+".discovery", "excludes hmac_secret and hmac_secret_file")
	}
	if p.Issuer == "" {
		return // reported as required
	}
	if _, err := discoveryURL(p.Issuer); err != nil {
		add(path+".issuer", "%v", err)
	}
}

// validateApps checks apps: unique names, one shared selector key with a
// distinct value per app, and each app's routes, audiences and headers.
func (c Config) validateApps(add func(string, string, ...any)) {
	names := map[string]int{}
	values := map[string]int{}
	selector, selectorFrom := "", ""
	for i, a := range c.Apps {
		path := fmt.Sprintf("apps[%d]", i)
		switch {
		case a.Name == "":
			add(path+".name", "is required")
		case a.Name == "default":
			add(path+".name", "\"default\" is the top-level rule set")
		case !validToken(a.Name):
			add(path+".name", "%q must be a token (letters, digits, -, _, .)", a.Name)
		default:
			if j, dup := names[a.Name]; dup {
				add(path+".name", "duplicates apps[%d].name", j)
			}
			names[a.Name] = i
		}
		mpath := path + ".match.context_extensions"
		if len(a.Match.ContextExtensions) != 1 {
			add(mpath, "must have exactly one key and value (e.g. app: web), not %d", len(a.Match.ContextExtensions))
		}
		for k, v := range a.Match.ContextExtensions {
			if len(a.Match.ContextExtensions) != 1 {
				break
			}
			switch {
			case k == "" || v == "":
				add(mpath, "the key and value must not be empty")
			case selector == "":
				selector, selectorFrom = k, path
				values[v] = i
			case k != selector:
				add(mpath, "key %q differs from %s's %q: every app is selected by the same key", k, selectorFrom, selector)
			default:
				if j, dup := values[v]; dup {
					add(mpath, "%s: %s also selects apps[%d]", k, v, j)
				}
				values[v] = i
			}
		}
		for j, r := range a.Routes {
			r.validate(fmt.Sprintf("%s.routes[%d]", path, j), add)
		}
		if !validAction(a.DefaultAction) {
			add(path+".default_action", "must be public, optional or required, not %q", a.DefaultAction)
		}
		for j, aud := range a.Audiences {
			if aud == "" {
				add(fmt.Sprintf("%s.audiences[%d]", path, j), "must not be empty")
			}
		}
		if a.Headers != nil {
			c.validateHeaders(c.appHeaders(a), path+".headers", add)
		}
		if a.DPoP != nil && a.DPoP.ExternalOrigin != "" {
			validateOrigin(a.DPoP.ExternalOrigin, path+".dpop.external_origin", add)
		}
	}
}

// appHeaders is the header configuration of app a: the top-level one with
// a's identity mapping and payload header where a sets them.
func (c Config) appHeaders(a App) HeaderConfig {
	h := c.Headers
	if a.Headers != nil {
		if a.Headers.Identity != nil {
			h.Identity = a.Headers.Identity
		}
		if a.Headers.PayloadHeader != "" {
			h.PayloadHeader = a.Headers.PayloadHeader
		}
	}
	return h
}

// validateHeaders checks the header configuration h found at path
// ("headers", or an app's "apps[i].headers", whose encoding and expiry
// header are the top-level ones and are reported there only).
func (c Config) validateHeaders(h HeaderConfig, at string, add func(string, string, ...any)) {
	seen := map[string]string{}
	expires := strings.ToLower(h.ExpiresInHeader)
	claim := func(name, path string) {
		lname := strings.ToLower(name)
		switch {
		case reservedHeader(lname) != "":
			add(path, "%q is reserved: it %s", name, reservedHeader(lname))
		case lname == expires:
			add(path, "%q is reserved: it is headers.expires_in_header", name)
		case name == "" || !validToken(name):
			add(path, "%q is not a valid header name", name)
		default:
			if other, dup := seen[lname]; dup {
				add(path, "header %q is also set by %s", name, other)
			}
			seen[lname] = path
		}
	}
	for i, m := range h.Identity {
		path := fmt.Sprintf("%s.identity[%d]", at, i)
		claim(m.Name, path+".name")
		if err := checkClaimPath(m.Claim); err != nil {
			add(path+".claim", "%v", err)
		}
		if strings.EqualFold(m.Name, c.ForwardAuth.AppHeader) {
			add(path+".name", "%q is forward_auth.app_header", m.Name)
		}
	}
	if h.PayloadHeader != "" {
		claim(h.PayloadHeader, at+".payload_header")
	}
	if at != "headers" {
		return
	}
	if why := reservedHeader(expires); why != "" {
		add("headers.expires_in_header", "%q is reserved: it %s", c.Headers.ExpiresInHeader, why)
	} else if !validToken(c.Headers.ExpiresInHeader) {
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
	for k, v := range r.ContextExtensions {
		if k == "" || v == "" {
			add(path+".context_extensions", "the key and value must not be empty")
		}
	}
	r.validateHolder(path, add)
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
