package extauthz

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
)

// policy selects a request's app and matches it to the app's first route
// rule that fits. It also owns what a request is: forward says which
// proxy's headers describe a forward-auth request, and origins which CORS
// origins are allowed.
type policy struct {
	def       *app            // the top-level rule set
	selector  string          // the context_extensions key that selects an app ("" without apps)
	byValue   map[string]*app // apps by their selector value (gRPC)
	byName    map[string]*app // apps by name (forward_auth.app_header)
	preflight bool            // CORS preflights pass without a token
	origins   originSet
	forward   forwardAuth
}

// app is one rule set, ready to use: its routes, the audiences its tokens
// must carry (nil: each provider's), its identity mapping and its cache
// class. Apps whose audiences and mapping are equal share a class, and so
// cache entries; a token verified for one class is never an answer for
// another (the verified-token cache has one map per class).
type app struct {
	name      string
	rules     []*rule
	fallback  *rule
	audiences []string
	mapper    *identityMapper
	class     int
	// dpopOrigin is apps[].dpop.external_origin ("": dpop.external_origin).
	dpopOrigin string
}

// errUnknownApp: the request names an app the configuration lacks.
var errUnknownApp = deny(ReasonUnknownApp, "no app of this extauthz serves the request")

// selectApp finds the request's app: by the context extension named
// apps[].match (gRPC) or by forward_auth.app_header (forward-auth). A
// request without a selector gets the default app; a selector that names
// no app is refused rather than judged by rules meant for another app.
func (p *policy) selectApp(r *request) (*app, *denial) {
	switch {
	case r.appNamed:
		if a := p.byName[r.appName]; a != nil {
			return a, nil
		}
		return p.def, errUnknownApp
	case p.selector == "":
		return p.def, nil
	}
	v, ok := r.ext[p.selector]
	if !ok {
		return p.def, nil
	}
	if a := p.byValue[v]; a != nil {
		return a, nil
	}
	return p.def, errUnknownApp
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
	ext       []extPair // context_extensions that must all be present
	// dpopRequired refuses tokens that are not DPoP-bound (routes[].dpop).
	dpopRequired bool
	bindNet      *netBinding    // routes[].bind_network (nil: none)
	bindDev      *deviceBinding // routes[].bind_device (nil: none)
}

type extPair struct{ key, value string }

// newPolicy builds the policy of a validated config with defaults applied.
func newPolicy(c Config) *policy {
	p := &policy{
		byValue:   map[string]*app{},
		byName:    map[string]*app{},
		preflight: *c.CORS.AllowPreflight,
		origins:   newOriginSet(c.CORS.AllowedOrigins),
		forward:   newForwardAuth(c.ForwardAuth.Proxy, c.ForwardAuth.AppHeader),
	}
	for _, h := range deviceHeaders(c) {
		p.forward.extra = append(p.forward.extra, decisionHeader{h, http.CanonicalHeaderKey(h)})
	}
	// Every app strips every app's identity headers that it does not set,
	// so no upstream ever receives a client's copy of one.
	var all []string
	for _, a := range append([]App{{}}, c.Apps...) {
		for _, m := range c.appHeaders(a).Identity {
			all = append(all, strings.ToLower(m.Name))
		}
		if ph := c.appHeaders(a).PayloadHeader; ph != "" {
			all = append(all, strings.ToLower(ph))
		}
	}
	classes := map[string]int{}
	build := func(name string, a App) *app {
		h := c.appHeaders(a)
		key := fmt.Sprintf("%q %q %q", sortedCopy(a.Audiences), h.Identity, h.PayloadHeader)
		class, ok := classes[key]
		if !ok {
			class = len(classes)
			classes[key] = class
		}
		out := &app{name: name, fallback: &rule{action: a.DefaultAction}, audiences: a.Audiences, mapper: newIdentityMapper(h).alsoRemove(all), class: class}
		for _, r := range a.Routes {
			out.rules = append(out.rules, newRule(r))
		}
		if a.DPoP != nil {
			out.dpopOrigin = strings.TrimSuffix(a.DPoP.ExternalOrigin, "/")
		}
		return out
	}
	p.def = build("default", App{Routes: c.Routes, DefaultAction: c.DefaultAction})
	for _, a := range c.Apps {
		built := build(a.Name, a)
		p.byName[a.Name] = built
		for k, v := range a.Match.ContextExtensions {
			p.selector = k
			p.byValue[v] = built
		}
	}
	return p
}

// classes is the number of cache classes the apps use.
func (p *policy) classes() int {
	n := p.def.class
	for _, a := range p.byName {
		n = max(n, a.class)
	}
	return n + 1
}

func newRule(r Route) *rule {
	nr := &rule{exact: r.Path, prefix: r.PathPrefix, action: r.Action, rolesAny: r.RolesAny, scopesAll: r.ScopesAll,
		dpopRequired: r.DPoP == DPoPRequired, bindNet: newNetBinding(r.BindNetwork), bindDev: newDeviceBinding(r.BindDevice)}
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
	for k, v := range r.ContextExtensions {
		nr.ext = append(nr.ext, extPair{k, v})
	}
	return nr
}

func sortedCopy(list []string) []string {
	if list == nil {
		return nil
	}
	out := slices.Clone(list)
	slices.Sort(out)
	return out
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

// match returns the app's rule for the request (its default when none matches).
func (a *app) match(r *request) *rule {
	host := normalizeHost(r.host)
	pth := normalizePath(r.path)
	for _, ru := range a.rules {
		if ru.matches(host, pth, r.method, r.ext) {
			return ru
		}
	}
	return a.fallback
}

func (ru *rule) matches(host, pth, method string, ext map[string]string) bool {
	for _, kv := range ru.ext {
		if v, ok := ext[kv.key]; !ok || v != kv.value {
			return false
		}
	}
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
