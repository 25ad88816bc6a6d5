package extauthz

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// request is what a decision needs from a check, whichever protocol it
// came by (gRPC CheckRequest or an HTTP forward-auth request).
type request struct {
	method string
	host   string
	path   string // as sent: path and query
	// headers has lower-case names; repeated headers are joined with ","
	// (cookies with "; "), as Envoy does.
	headers map[string]string
	// forwarded says the request came over HTTP forward-auth: its decision
	// headers are in fwd (by decisionHeaders' index), so reading them
	// allocates nothing; headers then holds only the extra ones (the
	// routes' bind_device headers), nil when there are none.
	forwarded bool
	fwd       [len(decisionHeaders)]string
	// ext are the CheckRequest's context_extensions (nil for forward-auth).
	ext map[string]string
	// appName is forward_auth.app_header's value, when appNamed.
	appName  string
	appNamed bool
	// app is the app selected for the request (set by decide, for logs).
	app *app
	// cache says whether the token was answered from the cache (set by
	// decide, for the check's span).
	cache cacheUse
	// dpopScheme: the token came in `Authorization: DPoP` (set by the
	// token finder).
	dpopScheme bool
	// scheme is the original request's scheme (http or https, "" when the
	// check does not say) and client its client address ("" when
	// unknown); both only for DPoP's htu and network binding.
	scheme string
	client string
	// now is the check's one clock reading (Server.begin): the cache's
	// validity and the token's expires-in use it. Zero: the state's clock.
	now time.Time
	// clientMissing / schemeMissing name the forward-auth header that
	// should have carried the client address / scheme but was absent or
	// repeated: an error only for a route or token that needs it.
	clientMissing string
	schemeMissing string
}

func (r *request) header(name string) string {
	if r.forwarded {
		for i := range decisionHeaders {
			if decisionHeaders[i].lower == name {
				return r.fwd[i]
			}
		}
	}
	return r.headers[name] // forward-auth: the routes' bind_device headers, when any
}

// tokenSource says where a token was found.
type tokenSource int

const (
	fromNowhere tokenSource = iota
	fromHeader
	fromCookie
	fromQuery
)

// tokenFinder looks for a token: `Authorization: Bearer` first, then the
// cookie, then (only when configured) the query parameter.
type tokenFinder struct {
	cookie     string
	queryParam string
	maxBytes   int
}

// find returns the token ("" when there is none) or a denial for a token
// that is refused before parsing (too long, empty Bearer).
func (f *tokenFinder) find(r *request) (string, tokenSource, *denial) {
	tok, src := f.locate(r)
	if src == fromNowhere {
		return "", src, nil
	}
	if tok == "" {
		return "", src, deny(ReasonInvalidToken, "the bearer token is empty")
	}
	if len(tok) > f.maxBytes {
		return "", src, deny(ReasonInvalidToken, "the token is longer than "+strconv.Itoa(f.maxBytes)+" bytes")
	}
	return tok, src, nil
}

func (f *tokenFinder) locate(r *request) (string, tokenSource) {
	if tok, isDPoP, ok := authorizationToken(r.header("authorization")); ok {
		r.dpopScheme = isDPoP
		return tok, fromHeader
	}
	if f.cookie != "" {
		if tok, ok := cookieValue(r.header("cookie"), f.cookie); ok {
			return tok, fromCookie
		}
	}
	if f.queryParam != "" {
		if i := strings.IndexByte(r.path, '?'); i >= 0 {
			q := r.path[i+1:]
			if j := strings.IndexByte(q, '#'); j >= 0 {
				q = q[:j]
			}
			if vals, err := url.ParseQuery(q); err == nil && vals.Has(f.queryParam) {
				return vals.Get(f.queryParam), fromQuery
			}
		}
	}
	return "", fromNowhere
}

// bearer extracts the credentials of an `Authorization: Bearer <token>`
// header; the scheme is case-insensitive (RFC 9110 §11.1). Other schemes
// (Basic, …) are not ours: ok is false and the request is treated as
// carrying no token.
func bearer(h string) (string, bool) {
	return schemeToken(h, "bearer")
}

// authorizationToken extracts the credentials of `Authorization: Bearer
// <token>` or `Authorization: DPoP <token>` (RFC 9449 §7.1); isDPoP says
// which scheme it was.
func authorizationToken(h string) (tok string, isDPoP, ok bool) {
	if tok, ok = schemeToken(h, "bearer"); ok {
		return tok, false, true
	}
	tok, ok = schemeToken(h, "dpop")
	return tok, ok, ok
}

func schemeToken(h, scheme string) (string, bool) {
	h = strings.TrimLeft(h, " \t")
	n := len(scheme)
	if len(h) < n || !strings.EqualFold(h[:n], scheme) {
		return "", false
	}
	rest := h[n:]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false // e.g. "Bearerfoo"
	}
	return strings.Trim(rest, " \t"), true
}

// cookieValue finds a cookie in a Cookie header (several headers arrive
// joined by "; " or ",").
func cookieValue(h, name string) (string, bool) {
	for h != "" {
		var part string
		part, h, _ = cutAny(h, ";,")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok || k != name {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

func cutAny(s, seps string) (before, after string, found bool) {
	if i := strings.IndexAny(s, seps); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}
