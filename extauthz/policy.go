package extauthz

import (
	"net"
	"net/url"
	"path"
	"strings"
)

// policy matches a request to the first route rule that fits. It also
// owns what a request is: forward says which proxy's headers describe a
// forward-auth request, and origins which CORS origins are allowed.
type policy struct {
	rules     []*rule
	fallback  *rule
	preflight bool // CORS preflights pass without a token
	origins   originSet
	forward   forwardAuth
}

// originSet is cors.allowed_origins, ready to test.
type originSet struct {
	exact map[string]bool
	any   bool // "*" (only without credentials: see Validate)
}

func newOriginSet(origins []string) originSet {
	o := originSet{exact: map[string]bool{}}
	for _, v := range origins {
		if v == "*" {
			o.any = true
			continue
		}
		o.exact[strings.TrimSuffix(v, "/")] = true
	}
	return o
}

func (o originSet) configured() bool { return o.any || len(o.exact) > 0 }

// allows reports whether origin may read our answers. "null" never may:
// it is what sandboxed frames, file: pages and cross-origin redirects
// send, so any site can produce it.
func (o originSet) allows(origin string) bool {
	return origin != "" && origin != "null" && (o.any || o.exact[origin])
}

type rule struct {
	host      string // lower case; "" any
	wildcard  bool   // host is ".example.com" from "*.example.com"
	exact     string
	prefix    string
	methods   map[string]bool
	action    Action
	rolesAny  []string
	scopesAll []string
}

func newPolicy(c Config) *policy {
	p := &policy{
		fallback:  &rule{action: c.DefaultAction},
		preflight: *c.CORS.AllowPreflight,
		origins:   newOriginSet(c.CORS.AllowedOrigins),
		forward:   newForwardAuth(c.ForwardAuth.Proxy),
	}
	for _, r := range c.Routes {
		nr := &rule{exact: r.Path, prefix: r.PathPrefix, action: r.Action, rolesAny: r.RolesAny, scopesAll: r.ScopesAll}
		if h := strings.ToLower(r.Host); strings.HasPrefix(h, "*.") {
			nr.host, nr.wildcard = h[1:], true
		} else {
			nr.host = h
		}
		if len(r.Methods) > 0 {
			nr.methods = map[string]bool{}
			for _, m := range r.Methods {
				nr.methods[m] = true
			}
		}
		p.rules = append(p.rules, nr)
	}
	return p
}

// isPreflight: an OPTIONS request with Origin and
// Access-Control-Request-Method is the browser asking, not the app. The
// method is the one the trusted proxy reports (forwardAuth); when CORS
// origins are configured, the Origin must be one of them — a preflight
// from anywhere else gets no permission, so it needs no pass either.
func (p *policy) isPreflight(r *request) bool {
	if !p.preflight || r.method != "OPTIONS" || r.header("access-control-request-method") == "" {
		return false
	}
	origin := r.header("origin")
	if p.origins.configured() {
		return p.origins.allows(origin)
	}
	return origin != ""
}

// match returns the rule for the request (the default when none matches).
func (p *policy) match(r *request) *rule {
	host := normalizeHost(r.host)
	pth := normalizePath(r.path)
	for _, ru := range p.rules {
		if ru.matches(host, pth, r.method) {
			return ru
		}
	}
	return p.fallback
}

func (ru *rule) matches(host, pth, method string) bool {
	switch {
	case ru.host == "":
	case ru.wildcard:
		if !strings.HasSuffix(host, ru.host) || len(host) == len(ru.host) {
			return false
		}
	case host != ru.host:
		return false
	}
	if ru.exact != "" && pth != ru.exact {
		return false
	}
	if ru.prefix != "" && !strings.HasPrefix(pth, ru.prefix) {
		return false
	}
	return ru.methods == nil || ru.methods[method]
}

func normalizeHost(h string) string {
	if strings.IndexByte(h, ':') >= 0 {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// normalizePath drops the query, decodes percent-escapes and resolves dot
// segments, so "/public/%2e%2e/admin" is matched as "/admin", the path an
// upstream would serve. A trailing slash is kept.
func normalizePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p != "" && p[0] == '/' && !strings.ContainsAny(p, "%\\") && !strings.Contains(p, "/.") && !strings.Contains(p, "//") {
		return p // already clean: the common case costs nothing
	}
	if dec, err := url.PathUnescape(p); err == nil {
		p = dec
	}
	p = strings.ReplaceAll(p, "\\", "/")
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	trailing := strings.HasSuffix(p, "/")
	p = path.Clean(p)
	if trailing && p != "/" {
		p += "/"
	}
	return p
}

// authorize checks roles_any and scopes_all against the verified claims.
func (ru *rule) authorize(e *entry) *denial {
	if len(ru.rolesAny) > 0 {
		ok := false
		for _, want := range ru.rolesAny {
			if contains(e.roles, want) {
				ok = true
				break
			}
		}
		if !ok {
			return &denial{reason: ReasonInsufficientScope, description: "the token lacks a required role", scope: strings.Join(ru.scopesAll, " ")}
		}
	}
	for _, want := range ru.scopesAll {
		if !contains(e.scopes, want) {
			return &denial{reason: ReasonInsufficientScope, description: "the token lacks a required scope", scope: strings.Join(ru.scopesAll, " ")}
		}
	}
	return nil
}

// stringList reads a claim that is a list of strings, or one string split
// on spaces (OAuth `scope`) or commas.
func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return strings.FieldsFunc(t, func(r rune) bool { return r == ' ' || r == ',' })
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
