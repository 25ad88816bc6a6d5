package extauthz

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// outcome is a decision, rendered as a CheckResponse or an HTTP answer.
type outcome struct {
	reason      Reason
	denial      *denial  // deny
	entry       *entry   // allow with identity (or deny after verification)
	unavailable error    // error: no decision possible
	set         []header // allow: identity headers to set upstream
	remove      []string // allow: headers to strip upstream
	deny        []header // deny: headers of the denial
	body        []byte   // deny: JSON body
	status      int      // deny: HTTP status
	// allow with identity (entry set): what the client is told.
	stripAuth bool  // remove includes "authorization"
	expose    bool  // the Origin is allowed: expose x-token-expires-in to it
	expiresIn int64 // x-token-expires-in, whole seconds, ≥ 0
	// dpopNonce, on an allow: a fresh DPoP-Nonce for the client.
	dpopNonce string
}

func (o *outcome) decision() string {
	switch {
	case o.unavailable != nil:
		return decisionError
	case o.denial != nil:
		return decisionDeny
	}
	return decisionAllow
}

// anonymous allows without identity: every mapped header is removed, so a
// client can never smuggle one upstream.
func (st *state) anonymous(in *request, a *app, r Reason, src tokenSource) outcome {
	o := outcome{reason: r, remove: a.mapper.names}
	if st.removeAuth && src == fromHeader {
		o.remove = append(append([]string(nil), o.remove...), "authorization")
	}
	return o
}

// allowed sets the identity headers from the verified token (each either
// set, overwriting client copies, or removed — never both) and tells the
// client how long its token has left.
func (st *state) allowed(in *request, e *entry, src tokenSource) outcome {
	o := outcome{reason: ReasonVerified, entry: e, set: e.set, remove: e.unset,
		stripAuth: st.removeAuth && src == fromHeader,
		expose:    st.originAllowed(in.header("origin")),
		expiresIn: max(int64(e.v.exp.Sub(st.now(in))/time.Second), 0),
	}
	if o.stripAuth {
		o.remove = e.unsetAuth
	}
	return o
}

// responseHeaders are the headers for the client of an allow with
// identity: how long the token has left and, for an allowed Origin, the
// permission to read it.
func (st *state) responseHeaders(o *outcome) []header {
	if o.entry == nil {
		return nil
	}
	hs := []header{{st.expiresHeader, strconv.FormatInt(o.expiresIn, 10)}}
	if o.expose {
		// Appended to the app's own expose list, so the browser can read it.
		hs = append(hs, header{"access-control-expose-headers", st.expiresHeader})
	}
	return hs
}

// allowVariant indexes entry.allows: the answers differ by whether the
// Authorization header is stripped and whether the Origin is allowed.
func (o *outcome) allowVariant() int {
	v := 0
	if o.stripAuth {
		v |= 1
	}
	if o.expose {
		v |= 2
	}
	return v
}

// denied renders a refusal: status, RFC 6750 WWW-Authenticate, JSON body,
// no-store, and CORS headers when the Origin is allowed (or the browser
// could not read the 401 at all).
// e, when known (revoked, insufficient scope), identifies the token in logs.
func (st *state) denied(in *request, d *denial, e *entry) outcome {
	o := outcome{reason: d.reason, denial: d, entry: e, status: d.reason.HTTPStatus()}
	o.deny = []header{
		{"www-authenticate", st.wwwAuthenticate(d)},
		{"content-type", "application/json"},
		{"cache-control", "no-store"},
	}
	if origin := in.header("origin"); st.originAllowed(origin) {
		o.deny = append(o.deny,
			header{"access-control-allow-origin", origin},
			header{"access-control-expose-headers", st.denialExpose()},
			header{"vary", "Origin"})
		if st.corsCreds {
			o.deny = append(o.deny, header{"access-control-allow-credentials", "true"})
		}
	}
	if d.nonce != "" {
		o.deny = append(o.deny, header{"dpop-nonce", d.nonce})
	}
	o.body = errorBody(d)
	return o
}

func (st *state) originAllowed(origin string) bool { return st.policy.origins.allows(origin) }

// wwwAuthenticate follows RFC 6750 §3: no error attribute when no token was
// sent; invalid_token for a token refused (expired and revoked included);
// insufficient_scope with the scope needed. RFC 6750 has no code for
// "expired", so an extension attribute reason="<our reason>" carries it
// machine-readably: proxies such as nginx auth_request drop our JSON body and
// pass only this header on, and a client must still tell token_expired apart.
func (st *state) wwwAuthenticate(d *denial) string {
	if d.dpop {
		return st.dpopChallenge(d)
	}
	var b strings.Builder
	b.WriteString(`Bearer realm="`)
	b.WriteString(st.realm)
	b.WriteByte('"')
	if d.reason == ReasonMissingToken || d.reason == ReasonUnknownApp {
		return b.String() // no token was judged
	}
	code := "invalid_token"
	if d.reason == ReasonInsufficientScope {
		code = "insufficient_scope"
	}
	b.WriteString(`, error="` + code + `", error_description="` + quoteSafe(d.description) + `", reason="` + string(d.reason) + `"`)
	if d.reason == ReasonInsufficientScope && d.scope != "" {
		b.WriteString(`, scope="` + quoteSafe(d.scope) + `"`)
	}
	return b.String()
}

func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

// errorBody is the one JSON renderer for denials.
func errorBody(d *denial) []byte {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(struct {
		Error       Reason `json:"error"`
		Description string `json:"error_description"`
	}{d.reason, d.description})
	return buf.Bytes()
}

// checkResponse renders an outcome for Envoy's gRPC ext_authz.
func (st *state) checkResponse(o *outcome) *authv3.CheckResponse {
	if o.denial != nil {
		c := code.Code_UNAUTHENTICATED
		if o.status == http.StatusForbidden {
			c = code.Code_PERMISSION_DENIED
		}
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(c), Message: string(o.reason)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(o.status)},
				Headers: headerOptions(o.deny, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				Body:    string(o.body),
			}},
		}
	}
	switch {
	case o.dpopNonce != "":
		return st.nonceAllow(o)
	case o.entry == nil:
		return st.okResponse(o, headerOptions(o.set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
	case !o.entry.ready:
		return st.okResponse(o, o.entry.setProto)
	}
	// A cache hit: the entry's ready-made answer while x-token-expires-in
	// is unchanged. Two Checks racing at a second's turn may both build
	// one; either is right, and neither is modified once stored.
	slot := &o.entry.allows[o.allowVariant()]
	if r := slot.Load(); r != nil && r.left == o.expiresIn {
		return r.resp
	}
	resp := st.okResponse(o, o.entry.setProto)
	slot.Store(&readyAllow{left: o.expiresIn, resp: resp})
	return resp
}

// okResponse builds an allow; set are the identity headers as protos.
func (st *state) okResponse(o *outcome, set []*corev3.HeaderValueOption) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{
		// OVERWRITE_IF_EXISTS_OR_ADD replaces every client-supplied value.
		Headers:         set,
		HeadersToRemove: o.remove,
	}
	if response := st.responseHeaders(o); len(response) > 0 {
		ok.ResponseHeadersToAdd = headerOptions(response[:1], corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
		if len(response) > 1 {
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, headerOptions(response[1:], corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)...)
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// headerProto is a header option and the value it points to, allocated
// together.
type headerProto struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

func headerOptions(hs []header, action corev3.HeaderValueOption_HeaderAppendAction) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	// Two allocations however many headers: each option and its value
	// are one element of an array (fewer objects for the collector to mark
	// in a cached entry's setProto).
	out := make([]*corev3.HeaderValueOption, len(hs))
	pairs := make([]headerProto, len(hs))
	for i, h := range hs {
		p := &pairs[i]
		p.val.Key, p.val.Value = h.name, h.value
		p.opt.Header, p.opt.AppendAction = &p.val, action
		out[i] = &p.opt
	}
	return out
}

// writeHTTP renders an outcome for HTTP forward-auth: an allow is 200 with
// the identity headers (the proxy copies them upstream), a deny has the same
// status, headers and body as over gRPC, and an error is 503.
func (st *state) writeHTTP(w http.ResponseWriter, o *outcome) {
	h := w.Header()
	if o.dpopNonce != "" {
		writeNonce(h, o)
	}
	switch {
	case o.unavailable != nil:
		h.Set("content-type", "application/json")
		h.Set("cache-control", "no-store")
		h.Set("retry-after", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		if o.reason == ReasonRevocationsUnavailable {
			w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"the revocation list is not loaded yet"}` + "\n"))
		} else {
			w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"token keys are not loaded yet"}` + "\n"))
		}
	case o.denial != nil:
		for _, x := range o.deny {
			h.Set(x.name, x.value)
		}
		h.Set("content-length", strconv.Itoa(len(o.body)))
		w.WriteHeader(o.status)
		w.Write(o.body)
	case o.entry != nil && o.entry.ready:
		st.writeReadyAllow(h, o)
		w.WriteHeader(http.StatusOK)
	default:
		for _, x := range o.set {
			h.Set(x.name, x.value)
		}
		if len(o.remove) > 0 {
			// Envoy's HTTP ext_authz mode removes these upstream (its
			// headers_to_remove); other proxies ignore it.
			h.Set("x-envoy-auth-headers-to-remove", strings.Join(o.remove, ","))
		}
		for _, x := range st.responseHeaders(o) {
			h.Add(x.name, x.value)
		}
		h.Set("cache-control", "no-store")
		w.WriteHeader(http.StatusOK)
	}
}

// writeReadyAllow writes the same headers as the default case of writeHTTP
// from the entry's ready-made values, assigned without canonicalising or
// allocating. The shared []string values have len == cap, so a later Add
// by anyone copies instead of writing into them.
func (st *state) writeReadyAllow(h http.Header, o *outcome) {
	e := o.entry
	for _, x := range e.httpSet {
		h[x.name] = x.values
	}
	remove := e.httpRemove[0]
	if o.stripAuth {
		remove = e.httpRemove[1]
	}
	if remove != nil {
		h[headerToRemoveKey] = remove
	}
	r := e.expires.Load()
	if r == nil || r.left != o.expiresIn {
		r = &readyExpires{left: o.expiresIn, value: [1]string{strconv.FormatInt(o.expiresIn, 10)}}
		r.values = r.value[:]
		e.expires.Store(r)
	}
	addHeader(h, st.expiresKey, r.values)
	if o.expose {
		addHeader(h, exposeHeadersKey, st.expiresValues)
	}
	h[cacheControlKey] = noStore
}

// Canonical names and shared values of the headers every allow writes.
var (
	headerToRemoveKey = http.CanonicalHeaderKey("x-envoy-auth-headers-to-remove")
	exposeHeadersKey  = http.CanonicalHeaderKey("access-control-expose-headers")
	cacheControlKey   = http.CanonicalHeaderKey("cache-control")
	noStore           = []string{"no-store"}
)

// addHeader is Header.Add for a canonical name and ready-made values.
func addHeader(h http.Header, name string, values []string) {
	if old, ok := h[name]; ok {
		h[name] = append(old[:len(old):len(old)], values...)
		return
	}
	h[name] = values
}

// fromCheckRequest reads what a decision needs from Envoy's request. With
// encode_raw_headers Envoy sends header_map instead of headers; both work.
// The request is a value so a Check does not allocate it.
func fromCheckRequest(req *authv3.CheckRequest) request {
	h := req.GetAttributes().GetRequest().GetHttp()
	in := request{method: h.GetMethod(), host: h.GetHost(), path: h.GetPath(), headers: h.GetHeaders(), ext: req.GetAttributes().GetContextExtensions(),
		scheme: h.GetScheme(), client: req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()}
	if len(in.headers) == 0 && h.GetHeaderMap() != nil {
		in.headers = map[string]string{}
		for _, kv := range h.GetHeaderMap().GetHeaders() {
			k := strings.ToLower(kv.GetKey())
			v := kv.GetValue()
			if v == "" {
				v = string(kv.GetRawValue())
			}
			if prev, ok := in.headers[k]; ok {
				sep := ","
				if k == "cookie" {
					sep = "; "
				}
				v = prev + sep + v
			}
			in.headers[k] = v
		}
	}
	if in.headers == nil {
		in.headers = map[string]string{}
	}
	if in.host == "" {
		in.host = in.headers[":authority"]
	}
	if in.path == "" {
		in.path = in.headers[":path"]
	}
	if in.method == "" {
		in.method = in.headers[":method"]
	}
	return in
}
