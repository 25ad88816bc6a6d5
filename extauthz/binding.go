package extauthz

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strings"
)

// confirmation is what a token's `cnf` claim (RFC 7800) binds it to: a
// DPoP key (jkt, RFC 9449 §6), the client address the refresher saw when
// it issued the token (ip) and a device identifier's SHA-256 (dev). Read
// once, when the token is verified, and cached with it.
type confirmation struct {
	jkt string
	ip  netip.Addr // the zero Addr: no cnf.ip
	dev string
}

// readConfirmation reads cnf from verified claims. A token without cnf
// costs one map lookup and no allocation. A malformed cnf is refused
// rather than read as absent, which would make a bound token unbound.
func readConfirmation(claims map[string]any) (confirmation, *denial) {
	raw, ok := claims["cnf"]
	if !ok {
		return confirmation{}, nil
	}
	cnf, ok := raw.(map[string]any)
	if !ok {
		return confirmation{}, deny(ReasonInvalidToken, "the token's cnf claim is not an object")
	}
	var c confirmation
	var d *denial
	if c.jkt, d = cnfString(cnf, "jkt"); d != nil {
		return confirmation{}, d
	}
	if c.dev, d = cnfString(cnf, "dev"); d != nil {
		return confirmation{}, d
	}
	if v, present := cnf["ip"]; present {
		s, _ := v.(string)
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return confirmation{}, deny(ReasonInvalidToken, "the token's cnf.ip is not an IP address")
		}
		c.ip = addr.Unmap().WithZone("")
	}
	return c, nil
}

func cnfString(cnf map[string]any, name string) (string, *denial) {
	v, present := cnf[name]
	if !present {
		return "", nil
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", deny(ReasonInvalidToken, "the token's cnf."+name+" is not a non-empty string")
	}
	return s, nil
}

// netBinding is a route's bind_network, ready to use.
type netBinding struct{ v4, v6 int }

// deviceBinding is a route's bind_device: the cookie or the header (lower
// case) that carries the device identifier.
type deviceBinding struct {
	cookie string
	header string
}

func newNetBinding(b *BindNetwork) *netBinding {
	if b == nil {
		return nil
	}
	nb := &netBinding{v4: DefaultBindIPv4Prefix, v6: DefaultBindIPv6Prefix}
	if b.IPv4Prefix != nil {
		nb.v4 = *b.IPv4Prefix
	}
	if b.IPv6Prefix != nil {
		nb.v6 = *b.IPv6Prefix
	}
	return nb
}

func newDeviceBinding(b *BindDevice) *deviceBinding {
	if b == nil {
		return nil
	}
	return &deviceBinding{cookie: b.Cookie, header: strings.ToLower(b.Header)}
}

// errNoClientAddress: a gRPC check without a source address (Envoy always
// sends one); a route that binds to the network cannot be decided.
var errNoClientAddress = deny(ReasonTokenUnbound, "the client address is unknown")

// checkBindings compares the request with the token's cnf.ip and cnf.dev
// on a route that binds them. A token without the claim is refused like a
// mismatch: token_unbound tells the client to refresh once, and a fresh
// token carries the binding. missing names the forward-auth header that
// should have carried the client address.
func (ru *rule) checkBindings(in *request, e *entry) (d *denial, missing string) {
	if nb := ru.bindNet; nb != nil {
		if in.client == "" && in.clientMissing != "" {
			return nil, in.clientMissing
		}
		if d := nb.check(in.client, e.v.cnf.ip); d != nil {
			return d, ""
		}
	}
	if db := ru.bindDev; db != nil {
		return db.check(in, e.v.cnf.dev), ""
	}
	return nil, ""
}

func (nb *netBinding) check(client string, bound netip.Addr) *denial {
	if !bound.IsValid() {
		return deny(ReasonTokenUnbound, "the token is not bound to a network")
	}
	if client == "" {
		return errNoClientAddress
	}
	addr, ok := parseClientAddr(client)
	if !ok {
		return deny(ReasonTokenUnbound, "the client address is not an IP address")
	}
	if addr.Is4() != bound.Is4() {
		return deny(ReasonTokenUnbound, "the request comes from another network than the token's")
	}
	bits := nb.v6
	if addr.Is4() {
		bits = nb.v4
	}
	p1, err1 := addr.Prefix(bits)
	p2, err2 := bound.Prefix(bits)
	if err1 != nil || err2 != nil || p1 != p2 {
		return deny(ReasonTokenUnbound, "the request comes from another network than the token's")
	}
	return nil
}

// parseClientAddr reads an address as proxies write it: "192.0.2.1",
// "2001:db8::1", "[2001:db8::1]:443" or "192.0.2.1:443"; an IPv4-mapped
// IPv6 address is its IPv4 address, and a zone is dropped.
func parseClientAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	addr, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			return netip.Addr{}, false
		}
		addr = ap.Addr()
	}
	return addr.Unmap().WithZone(""), true
}

func (db *deviceBinding) check(in *request, bound string) *denial {
	if bound == "" {
		return deny(ReasonTokenUnbound, "the token is not bound to a device")
	}
	var id string
	var ok bool
	if db.cookie != "" {
		id, ok = cookieValue(in.header("cookie"), db.cookie)
	} else {
		id, ok = in.headers[db.header]
	}
	if !ok || id == "" {
		return deny(ReasonTokenUnbound, "the request does not carry the token's device identifier")
	}
	sum := sha256.Sum256([]byte(id))
	var enc [43]byte // base64url of 32 bytes, no padding
	base64.RawURLEncoding.Encode(enc[:], sum[:])
	if subtle.ConstantTimeCompare(enc[:], []byte(bound)) != 1 {
		return deny(ReasonTokenUnbound, "the request carries another device identifier than the token's")
	}
	return nil
}

// validateHolder checks a route's dpop, bind_network and bind_device.
func (r Route) validateHolder(path string, add func(string, string, ...any)) {
	switch r.DPoP {
	case "", DPoPOptional, DPoPRequired:
	default:
		add(path+".dpop", "must be optional or required, not %q", r.DPoP)
	}
	if b := r.BindNetwork; b != nil {
		if b.IPv4Prefix != nil && (*b.IPv4Prefix < 0 || *b.IPv4Prefix > 32) {
			add(path+".bind_network.ipv4_prefix", "must be 0 to 32, not %d", *b.IPv4Prefix)
		}
		if b.IPv6Prefix != nil && (*b.IPv6Prefix < 0 || *b.IPv6Prefix > 128) {
			add(path+".bind_network.ipv6_prefix", "must be 0 to 128, not %d", *b.IPv6Prefix)
		}
	}
	if b := r.BindDevice; b != nil {
		switch {
		case (b.Cookie == "") == (b.Header == ""):
			add(path+".bind_device", "set exactly one of cookie and header")
		case b.Cookie != "" && !validToken(b.Cookie):
			add(path+".bind_device.cookie", "%q is not a valid cookie name", b.Cookie)
		case b.Header != "" && !validToken(b.Header):
			add(path+".bind_device.header", "%q is not a valid header name", b.Header)
		case b.Header != "" && reservedHeader(strings.ToLower(b.Header)) != "":
			add(path+".bind_device.header", "%q is reserved: it %s", b.Header, reservedHeader(strings.ToLower(b.Header)))
		}
	}
}

// deviceHeaders are the bind_device headers of every route (lower case):
// forward-auth copies them besides decisionHeaders.
func deviceHeaders(c Config) []string {
	var out []string
	seen := map[string]bool{}
	note := func(rs []Route) {
		for _, r := range rs {
			if r.BindDevice != nil && r.BindDevice.Header != "" {
				h := strings.ToLower(r.BindDevice.Header)
				if !seen[h] {
					seen[h] = true
					out = append(out, h)
				}
			}
		}
	}
	note(c.Routes)
	for _, a := range c.Apps {
		note(a.Routes)
	}
	return out
}

// readClient reads the client address and the scheme of a forward-auth
// request by its proxy's convention: nginx sets X-Real-IP (exactly once);
// Traefik, Caddy and Envoy (use_remote_address) append the address they
// saw to X-Forwarded-For, so its right-most entry is the one a client
// cannot forge. The scheme is X-Forwarded-Proto, exactly once. What is
// missing is remembered, not refused: only a DPoP proof (without
// dpop.external_origin) or a network binding needs it.
func readClient(r *http.Request, in *request, family headerFamily) {
	var ok bool
	if family == familyNginx {
		if in.client, ok = onlyValue(r.Header, "X-Real-Ip"); !ok {
			in.clientMissing = "X-Real-IP"
		}
	} else {
		vs := r.Header["X-Forwarded-For"]
		if len(vs) > 0 {
			last := vs[len(vs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			in.client = strings.TrimSpace(last)
		}
		if in.client == "" {
			in.clientMissing = "X-Forwarded-For"
		}
	}
	if in.scheme, ok = onlyValue(r.Header, "X-Forwarded-Proto"); ok {
		in.scheme = strings.ToLower(in.scheme)
	} else {
		in.schemeMissing = "X-Forwarded-Proto"
	}
}

// errNeedsHeader: a forward-auth request lacks (or repeats) the header
// that carries what this request's decision needs (the client address for
// bind_network, the scheme for a DPoP proof's htu).
type errNeedsHeader struct{ proxy, header string }

func (e *errNeedsHeader) Error() string {
	return "forward_auth.proxy is " + e.proxy + ": this request needs exactly one " + e.header + " header, set by the proxy (DPoP proofs and bind_network read it)"
}
