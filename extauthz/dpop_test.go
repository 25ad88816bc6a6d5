package extauthz

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
)

// The resource side of DPoP and the network/device bindings, over gRPC
// Check and over HTTP forward-auth (Envoy's convention, the default; nginx's
// in its own test).

const (
	apiHost = "app.test"
	apiPath = "/api/things"
	apiURL  = "https://" + apiHost + apiPath
)

// holderReq is one original request: what the client sent and where from.
type holderReq struct {
	method  string // default GET
	path    string // default apiPath; may carry a query
	headers map[string]string
	client  string // the client address ("" none)
	scheme  string // default https
}

// dkit is what a request builder can use: the token signing key, the
// client's DPoP key and another one, and the clock.
type dkit struct {
	t      *testing.T
	es     *testKey
	now    time.Time
	holder *dpoptest.Key
	thief  *dpoptest.Key
}

// key returns the client's DPoP key (made on first use).
func (k *dkit) key() *dpoptest.Key {
	if k.holder == nil {
		k.holder = dpoptest.NewKey(k.t, "ES256")
	}
	return k.holder
}

func (k *dkit) otherKey() *dpoptest.Key {
	if k.thief == nil {
		k.thief = dpoptest.NewKey(k.t, "ES256")
	}
	return k.thief
}

// token signs a token whose cnf holds cnf's members (none: unbound).
func (k *dkit) token(cnf map[string]any) string {
	c := claimsAt(k.now)
	if cnf != nil {
		c["cnf"] = cnf
	}
	return k.es.token(k.t, c)
}

// bound is a token bound to the client's key.
func (k *dkit) bound() string { return k.token(map[string]any{"jkt": k.key().JKT()}) }

// dpopReq is a bound token sent as DPoP with a proof for GET apiURL.
func (k *dkit) dpopReq(tok string, opts ...dpoptest.Opt) holderReq {
	opts = append([]dpoptest.Opt{dpoptest.WithATH(tok), dpoptest.WithIAT(k.now)}, opts...)
	return holderReq{headers: map[string]string{"authorization": "DPoP " + tok, "dpop": k.key().Proof("GET", apiURL, opts...)}}
}

func bearerOnly(tok string) holderReq {
	return holderReq{headers: map[string]string{"authorization": "Bearer " + tok}}
}

func deviceHash(id string) string {
	s := sha256.Sum256([]byte(id))
	return b64(s[:])
}

func (r holderReq) defaults() holderReq {
	if r.method == "" {
		r.method = "GET"
	}
	if r.path == "" {
		r.path = apiPath
	}
	if r.scheme == "" {
		r.scheme = "https"
	}
	if r.headers == nil {
		r.headers = map[string]string{}
	}
	return r
}

// grpcReq is the CheckRequest Envoy sends for r.
func (r holderReq) grpcReq() *authv3.CheckRequest {
	r = r.defaults()
	req := checkReq(r.method, apiHost, r.path, r.headers)
	req.Attributes.Request.Http.Scheme = r.scheme
	if r.client != "" {
		req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: r.client, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50123}},
		}}}
	}
	return req
}

// httpReq is the auth request Envoy's HTTP mode sends for r
// (use_remote_address: X-Forwarded-For ends with the peer).
func (r holderReq) httpReq() *http.Request {
	r = r.defaults()
	hr := httptest.NewRequest(r.method, "/authz"+r.path, nil)
	hr.Host = apiHost
	for n, v := range r.headers {
		hr.Header.Set(n, v)
	}
	if r.client != "" {
		hr.Header.Set("X-Forwarded-For", "203.0.113.250, "+r.client)
	}
	hr.Header.Set("X-Forwarded-Proto", r.scheme)
	return hr
}

// forward sends an auth request and flattens the answer like flatten does
// a CheckResponse (set: the answer's headers, lower case; status 0 = 200).
func forward(t *testing.T, h *harness, r *http.Request) answer {
	t.Helper()
	w := httptest.NewRecorder()
	h.srv.Routes().ServeHTTP(w, r)
	a := answer{set: map[string]string{}, response: map[string]string{}}
	for n, vs := range w.Header() {
		a.set[strings.ToLower(n)] = strings.Join(vs, ", ")
		a.response[strings.ToLower(n)] = strings.Join(vs, ", ")
	}
	if w.Code == http.StatusOK {
		a.allowed = true
		return a
	}
	a.status = w.Code
	if err := json.Unmarshal(w.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("answer %d %q: %v", w.Code, w.Body.String(), err)
	}
	if a.status == http.StatusBadRequest {
		a.body["error"] = "400 " + a.body["error"]
	}
	return a
}

// holderCase is one row, run over gRPC and over forward-auth, each on its
// own server (a proof accepted by one must not be a replay for the other).
type holderCase struct {
	name string
	cfg  func(*Config)
	req  func(k *dkit) holderReq
	// replay sends the request once before (it must be allowed).
	replay bool
	want   string
	verify func(t *testing.T, a answer)
}

func runHolderCases(t *testing.T, cases []holderCase) {
	t.Helper()
	for _, tc := range cases {
		for _, transport := range []string{"grpc", "forward-auth"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				t.Parallel()
				k := &dkit{t: t, es: newTestKey(t, "ES256", "es-1")}
				cfg := baseConfig(t, k.es)
				cfg.Routes = []Route{{PathPrefix: "/api/", Action: ActionRequired}}
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				h := newHarness(t, cfg)
				k.now = h.clock.Now()
				r := tc.req(k)
				send := func() answer {
					if transport == "grpc" {
						return h.check(t, r.grpcReq())
					}
					return forward(t, h, r.httpReq())
				}
				if tc.replay {
					if first := send(); !first.allowed {
						t.Fatalf("first use refused: %+v", first)
					}
				}
				a := send()
				if got := a.reason(); got != tc.want {
					t.Fatalf("outcome %q, want %q (answer %+v)", got, tc.want, a)
				}
				if tc.verify != nil {
					tc.verify(t, a)
				}
			})
		}
	}
}

// challenge asserts the WWW-Authenticate of a DPoP denial.
func challenge(code string) func(t *testing.T, a answer) {
	return func(t *testing.T, a answer) {
		t.Helper()
		got := a.set["www-authenticate"]
		if !strings.HasPrefix(got, `DPoP realm="tokengate", error="`+code+`"`) || !strings.Contains(got, `algs="ES256 `) {
			t.Errorf("www-authenticate %q, want a DPoP challenge with error %s and algs", got, code)
		}
		if a.status != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", a.status)
		}
	}
}

func onRoute(r Route) func(*Config) {
	return func(c *Config) { c.Routes = []Route{r} }
}

func intp(n int) *int { return &n }

// TestDPoPProofs: a bound token is accepted only with a valid proof by its
// key, whatever carries it; everything else about the proof is refused.
func TestDPoPProofs(t *testing.T) {
	t.Parallel()
	bad := challenge("invalid_dpop_proof")
	runHolderCases(t, []holderCase{
		{name: "valid proof", want: "allow", req: func(k *dkit) holderReq { return k.dpopReq(k.bound()) }},
		{name: "query ignored in htu", want: "allow", req: func(k *dkit) holderReq {
			r := k.dpopReq(k.bound())
			r.path = apiPath + "?page=2"
			return r
		}},
		{name: "bound token as bearer", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			tok := k.bound()
			r := k.dpopReq(tok)
			r.headers["authorization"] = "Bearer " + tok // with a valid proof even
			return r
		}},
		{name: "bound token as bearer without proof", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			return bearerOnly(k.bound())
		}},
		{name: "missing proof", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			tok := k.bound()
			return holderReq{headers: map[string]string{"authorization": "DPoP " + tok}}
		}},
		{name: "proof by another key", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			tok := k.bound()
			r := k.dpopReq(tok)
			r.headers["dpop"] = k.otherKey().Proof("GET", apiURL, dpoptest.WithATH(tok), dpoptest.WithIAT(k.now))
			return r
		}},
		{name: "token bound to another key", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			return k.dpopReq(k.token(map[string]any{"jkt": k.otherKey().JKT()}))
		}},
		{name: "wrong htm", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			r := k.dpopReq(k.bound())
			r.method = "POST"
			return r
		}},
		{name: "wrong htu path", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			r := k.dpopReq(k.bound())
			r.path = "/api/other"
			return r
		}},
		{name: "wrong htu scheme", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			r := k.dpopReq(k.bound())
			r.scheme = "http"
			return r
		}},
		{name: "wrong ath", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			tok := k.bound()
			r := k.dpopReq(tok)
			r.headers["dpop"] = k.key().Proof("GET", apiURL, dpoptest.WithATH(k.token(map[string]any{"jkt": k.key().JKT(), "x": 1})), dpoptest.WithIAT(k.now))
			return r
		}},
		{name: "stale proof", want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			return k.dpopReq(k.bound(), dpoptest.WithIAT(k.now.Add(-2*time.Minute)))
		}},
		{name: "replayed proof", replay: true, want: "invalid_dpop_proof", verify: bad, req: func(k *dkit) holderReq {
			return k.dpopReq(k.bound())
		}},
		{name: "cookie transport with proof", want: "allow",
			cfg: func(c *Config) { c.Token.Cookie = "at" },
			req: func(k *dkit) holderReq {
				tok := k.bound()
				r := k.dpopReq(tok)
				delete(r.headers, "authorization")
				r.headers["cookie"] = "at=" + tok
				return r
			}},
		{name: "cookie transport without proof", want: "invalid_dpop_proof", verify: bad,
			cfg: func(c *Config) { c.Token.Cookie = "at" },
			req: func(k *dkit) holderReq {
				return holderReq{headers: map[string]string{"cookie": "at=" + k.bound()}}
			}},
		{name: "external_origin pins htu", want: "allow",
			cfg: func(c *Config) { c.DPoP.ExternalOrigin = "https://api.example.com" },
			req: func(k *dkit) holderReq {
				tok := k.bound()
				return holderReq{scheme: "http", headers: map[string]string{"authorization": "DPoP " + tok,
					"dpop": k.key().Proof("GET", "https://api.example.com"+apiPath, dpoptest.WithATH(tok), dpoptest.WithIAT(k.now))}}
			}},
		{name: "external_origin refuses the seen host", want: "invalid_dpop_proof", verify: bad,
			cfg: func(c *Config) { c.DPoP.ExternalOrigin = "https://api.example.com" },
			req: func(k *dkit) holderReq { return k.dpopReq(k.bound()) }},
		{name: "unbound token as bearer", want: "allow", req: func(k *dkit) holderReq { return bearerOnly(k.token(nil)) }},
		{name: "unbound token with the DPoP scheme", want: "invalid_token", verify: challenge("invalid_token"), req: func(k *dkit) holderReq {
			return holderReq{headers: map[string]string{"authorization": "DPoP " + k.token(nil)}}
		}},
		{name: "dpop required refuses bearer", want: "invalid_token", verify: challenge("invalid_token"),
			cfg: onRoute(Route{PathPrefix: "/api/", Action: ActionRequired, DPoP: DPoPRequired}),
			req: func(k *dkit) holderReq { return bearerOnly(k.token(nil)) }},
		{name: "dpop required allows a bound token", want: "allow",
			cfg: onRoute(Route{PathPrefix: "/api/", Action: ActionRequired, DPoP: DPoPRequired}),
			req: func(k *dkit) holderReq { return k.dpopReq(k.bound()) }},
		{name: "public route bad proof is anonymous", want: "allow",
			cfg: onRoute(Route{PathPrefix: "/api/", Action: ActionPublic}),
			req: func(k *dkit) holderReq { return bearerOnly(k.bound()) },
			verify: func(t *testing.T, a answer) {
				if a.set["x-user-id"] != "" {
					t.Errorf("identity %q injected for a refused proof", a.set["x-user-id"])
				}
			}},
		{name: "optional route bad proof is denied", want: "invalid_dpop_proof",
			cfg: onRoute(Route{PathPrefix: "/api/", Action: ActionOptional}),
			req: func(k *dkit) holderReq { return bearerOnly(k.bound()) }},
		{name: "malformed cnf.jkt", want: "invalid_token", req: func(k *dkit) holderReq {
			return bearerOnly(k.token(map[string]any{"jkt": 7}))
		}},
		{name: "cnf not an object", want: "invalid_token", req: func(k *dkit) holderReq {
			c := claimsAt(k.now)
			c["cnf"] = "jkt"
			return bearerOnly(k.es.token(k.t, c))
		}},
	})
}

// TestNetworkBinding: bind_network compares the client address with cnf.ip.
func TestNetworkBinding(t *testing.T) {
	t.Parallel()
	route := func(v4, v6 int) func(*Config) {
		return onRoute(Route{PathPrefix: "/api/", Action: ActionRequired, BindNetwork: &BindNetwork{IPv4Prefix: intp(v4), IPv6Prefix: intp(v6)}})
	}
	from := func(ip, client string) func(k *dkit) holderReq {
		return func(k *dkit) holderReq {
			cnf := map[string]any{}
			if ip != "" {
				cnf["ip"] = ip
			}
			r := bearerOnly(k.token(cnf))
			r.client = client
			return r
		}
	}
	unbound := func(t *testing.T, a answer) {
		t.Helper()
		if got := a.set["www-authenticate"]; !strings.Contains(got, `error="invalid_token"`) || !strings.Contains(got, `reason="token_unbound"`) {
			t.Errorf("www-authenticate %q", got)
		}
	}
	runHolderCases(t, []holderCase{
		{name: "v4 exact", cfg: route(32, 128), req: from("192.0.2.7", "192.0.2.7"), want: "allow"},
		{name: "v4 /32 other address", cfg: route(32, 128), req: from("192.0.2.7", "192.0.2.8"), want: "token_unbound", verify: unbound},
		{name: "v4 /24 same network", cfg: route(24, 64), req: from("192.0.2.7", "192.0.2.200"), want: "allow"},
		{name: "v4 /24 other network", cfg: route(24, 64), req: from("192.0.2.7", "192.0.3.7"), want: "token_unbound"},
		{name: "v6 /64 same network", cfg: route(32, 64), req: from("2001:db8:1:2::1", "2001:db8:1:2:aaaa::9"), want: "allow"},
		{name: "v6 /64 other network", cfg: route(32, 64), req: from("2001:db8:1:2::1", "2001:db8:1:3::1"), want: "token_unbound"},
		{name: "mapped client matches v4 claim", cfg: route(32, 64), req: from("192.0.2.7", "::ffff:192.0.2.7"), want: "allow"},
		{name: "mapped claim matches v4 client", cfg: route(32, 64), req: from("::ffff:192.0.2.7", "192.0.2.7"), want: "allow"},
		{name: "mapped other address", cfg: route(32, 64), req: from("192.0.2.7", "::ffff:192.0.2.9"), want: "token_unbound"},
		{name: "other family", cfg: route(0, 0), req: from("192.0.2.7", "2001:db8::1"), want: "token_unbound"},
		{name: "missing claim", cfg: route(32, 64), req: from("", "192.0.2.7"), want: "token_unbound", verify: unbound},
		{name: "unparsable claim", cfg: route(32, 64), req: from("not-an-ip", "192.0.2.7"), want: "invalid_token"},
		{name: "no binding on the route", req: from("192.0.2.7", "198.51.100.1"), want: "allow"},
		{name: "bound DPoP token keeps its scheme in the challenge", cfg: route(32, 64), want: "token_unbound",
			req: func(k *dkit) holderReq {
				tok := k.token(map[string]any{"jkt": k.key().JKT(), "ip": "192.0.2.7"})
				r := k.dpopReq(tok)
				r.client = "198.51.100.1"
				return r
			},
			verify: func(t *testing.T, a answer) {
				if got := a.set["www-authenticate"]; !strings.HasPrefix(got, "DPoP ") || !strings.Contains(got, `reason="token_unbound"`) {
					t.Errorf("www-authenticate %q", got)
				}
			}},
	})
}

// TestDeviceBinding: bind_device compares SHA-256 of a cookie or header
// with cnf.dev.
func TestDeviceBinding(t *testing.T) {
	t.Parallel()
	byCookie := onRoute(Route{PathPrefix: "/api/", Action: ActionRequired, BindDevice: &BindDevice{Cookie: "device_id"}})
	byHeader := onRoute(Route{PathPrefix: "/api/", Action: ActionRequired, BindDevice: &BindDevice{Header: "X-Device-Id"}})
	dev := deviceHash("laptop-42")
	with := func(cnfDev string, extra map[string]string) func(k *dkit) holderReq {
		return func(k *dkit) holderReq {
			cnf := map[string]any{}
			if cnfDev != "" {
				cnf["dev"] = cnfDev
			}
			r := bearerOnly(k.token(cnf))
			for n, v := range extra {
				r.headers[n] = v
			}
			return r
		}
	}
	runHolderCases(t, []holderCase{
		{name: "cookie matches", cfg: byCookie, req: with(dev, map[string]string{"cookie": "a=b; device_id=laptop-42"}), want: "allow"},
		{name: "cookie differs", cfg: byCookie, req: with(dev, map[string]string{"cookie": "device_id=phone-1"}), want: "token_unbound"},
		{name: "cookie missing", cfg: byCookie, req: with(dev, nil), want: "token_unbound"},
		{name: "raw identifier in the claim", cfg: byCookie, req: with("laptop-42", map[string]string{"cookie": "device_id=laptop-42"}), want: "token_unbound"},
		{name: "header matches", cfg: byHeader, req: with(dev, map[string]string{"x-device-id": "laptop-42"}), want: "allow"},
		{name: "header differs", cfg: byHeader, req: with(dev, map[string]string{"x-device-id": "laptop-43"}), want: "token_unbound"},
		{name: "claim missing", cfg: byHeader, req: with("", map[string]string{"x-device-id": "laptop-42"}), want: "token_unbound"},
	})
}

// TestDPoPNonceFlow: with nonces on, a proof without one is answered
// use_dpop_nonce with a nonce; the retry signed with it is allowed; an
// allow whose nonce is past half its lifetime carries a fresh one.
func TestDPoPNonceFlow(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"grpc", "forward-auth"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			k := &dkit{t: t, es: newTestKey(t, "ES256", "es-1")}
			cfg := baseConfig(t, k.es)
			cfg.DPoP.Nonce = DPoPNonceConfig{Enabled: true, Lifetime: Duration{4 * time.Minute}}
			cfg.CORS.AllowedOrigins = []string{"https://app.example"}
			h := newHarness(t, cfg)
			k.now = h.clock.Now()
			send := func(r holderReq) answer {
				r.headers["origin"] = "https://app.example"
				if transport == "grpc" {
					return h.check(t, r.grpcReq())
				}
				return forward(t, h, r.httpReq())
			}
			tok := k.bound()
			a := send(k.dpopReq(tok))
			if a.reason() != "use_dpop_nonce" {
				t.Fatalf("without a nonce: %+v", a)
			}
			challenge("use_dpop_nonce")(t, a)
			nonce := a.set["dpop-nonce"]
			if nonce == "" {
				t.Fatalf("no dpop-nonce in %+v", a.set)
			}
			if got := a.set["access-control-expose-headers"]; !strings.Contains(got, "dpop-nonce") || !strings.Contains(got, "www-authenticate") {
				t.Errorf("access-control-expose-headers %q", got)
			}
			a = send(k.dpopReq(tok, dpoptest.WithNonce(nonce)))
			if !a.allowed {
				t.Fatalf("with the nonce: %+v", a)
			}
			if a.response["dpop-nonce"] != "" {
				t.Errorf("a fresh nonce got a new one: %q", a.response["dpop-nonce"])
			}
			a = send(k.dpopReq(tok, dpoptest.WithNonce("forged")))
			if a.reason() != "use_dpop_nonce" {
				t.Fatalf("a forged nonce: %+v", a)
			}
			// Past half its lifetime: accepted, and a fresh one comes back.
			h.clock.Advance(3 * time.Minute)
			k.now = h.clock.Now()
			tok = k.bound()
			a = send(k.dpopReq(tok, dpoptest.WithNonce(nonce)))
			if !a.allowed {
				t.Fatalf("an ageing nonce: %+v", a)
			}
			fresh := a.response["dpop-nonce"]
			if fresh == "" || fresh == nonce {
				t.Fatalf("dpop-nonce %q after an ageing nonce %q", fresh, nonce)
			}
			if !strings.Contains(a.response["access-control-expose-headers"], "dpop-nonce") {
				t.Errorf("expose %q", a.response["access-control-expose-headers"])
			}
			a = send(k.dpopReq(tok, dpoptest.WithNonce(fresh)))
			if !a.allowed {
				t.Fatalf("the fresh nonce: %+v", a)
			}
			// Expired.
			h.clock.Advance(5 * time.Minute)
			k.now = h.clock.Now()
			tok = k.bound()
			if a = send(k.dpopReq(tok, dpoptest.WithNonce(fresh))); a.reason() != "use_dpop_nonce" {
				t.Fatalf("an expired nonce: %+v", a)
			}
		})
	}
}

// TestForwardAuthClientAddress: each proxy convention's client address
// and scheme, and the 400 when a route needs one the proxy did not send.
func TestForwardAuthClientAddress(t *testing.T) {
	t.Parallel()
	k := &dkit{t: t, es: newTestKey(t, "ES256", "es-1")}
	for _, tc := range []struct {
		name, proxy string
		headers     map[string][]string
		want        int // HTTP status
	}{
		{"nginx real ip", ProxyNginx, map[string][]string{"X-Real-Ip": {"192.0.2.7"}}, 200},
		{"nginx other ip", ProxyNginx, map[string][]string{"X-Real-Ip": {"192.0.2.8"}}, 401},
		{"nginx forwarded-for is not read", ProxyNginx, map[string][]string{"X-Forwarded-For": {"192.0.2.7"}}, 400},
		{"nginx real ip twice", ProxyNginx, map[string][]string{"X-Real-Ip": {"192.0.2.7", "192.0.2.7"}}, 400},
		{"caddy right-most", ProxyCaddy, map[string][]string{"X-Forwarded-For": {"192.0.2.9, 192.0.2.7"}}, 200},
		{"caddy client's own entry is not read", ProxyCaddy, map[string][]string{"X-Forwarded-For": {"192.0.2.7, 198.51.100.1"}}, 401},
		{"traefik several headers", ProxyTraefik, map[string][]string{"X-Forwarded-For": {"192.0.2.7", "192.0.2.9, 192.0.2.7"}}, 200},
		{"traefik missing", ProxyTraefik, nil, 400},
		{"traefik real ip is not read", ProxyTraefik, map[string][]string{"X-Real-Ip": {"192.0.2.7"}}, 400},
		{"envoy right-most", ProxyEnvoy, map[string][]string{"X-Forwarded-For": {"1.1.1.1,192.0.2.7"}}, 200},
		{"envoy missing", ProxyEnvoy, nil, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig(t, k.es)
			cfg.ForwardAuth.Proxy = tc.proxy
			cfg.Routes = []Route{{PathPrefix: "/api/", Action: ActionRequired, BindNetwork: &BindNetwork{}}}
			h := newHarness(t, cfg)
			kk := &dkit{t: t, es: k.es, now: h.clock.Now()}
			r := httptest.NewRequest("GET", "/authz"+apiPath, nil)
			r.Host = apiHost
			switch tc.proxy {
			case ProxyNginx:
				r.Header.Set("X-Original-Uri", apiPath)
				r.Header.Set("X-Original-Method", "GET")
			case ProxyCaddy, ProxyTraefik:
				r.Header.Set("X-Forwarded-Uri", apiPath)
				r.Header.Set("X-Forwarded-Method", "GET")
				r.Header.Set("X-Forwarded-Host", apiHost)
			}
			r.Header.Set("Authorization", "Bearer "+kk.token(map[string]any{"ip": "192.0.2.7"}))
			for n, vs := range tc.headers {
				r.Header[n] = vs
			}
			w := httptest.NewRecorder()
			h.srv.Routes().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if tc.want == 400 && !strings.Contains(w.Body.String(), "exactly one") {
				t.Errorf("400 body %s does not name the header", w.Body)
			}
		})
	}
}

// TestForwardAuthScheme: without external_origin, a proof's htu needs the
// scheme the proxy saw; nginx sends X-Forwarded-Proto, or the auth request
// is refused 400 rather than judged.
func TestForwardAuthScheme(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		proto  []string
		origin string
		want   int
	}{
		{"https", []string{"https"}, "", 200},
		{"http does not match an https proof", []string{"http"}, "", 401},
		{"missing", nil, "", 400},
		{"twice", []string{"https", "https"}, "", 400},
		{"missing with external_origin", nil, "https://" + apiHost, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := &dkit{t: t, es: newTestKey(t, "ES256", "es-1")}
			cfg := baseConfig(t, k.es)
			cfg.ForwardAuth.Proxy = ProxyNginx
			cfg.DPoP.ExternalOrigin = tc.origin
			h := newHarness(t, cfg)
			k.now = h.clock.Now()
			req := k.dpopReq(k.bound())
			r := httptest.NewRequest("GET", "/authz/", nil)
			r.Host = apiHost
			r.Header.Set("X-Original-Uri", apiPath)
			r.Header.Set("X-Original-Method", "GET")
			for n, v := range req.headers {
				r.Header.Set(n, v)
			}
			if tc.proto != nil {
				r.Header["X-Forwarded-Proto"] = tc.proto
			}
			w := httptest.NewRecorder()
			h.srv.Routes().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
		})
	}
}

// TestDPoPConfigValidation: every problem at once, each with its path.
func TestDPoPConfigValidation(t *testing.T) {
	t.Parallel()
	k := newTestKey(t, "ES256", "es-1")
	cfg := baseConfig(t, k)
	cfg.DPoP = DPoPConfig{Algorithms: []string{"ES256", "HS256", "none"}, MaxAge: Duration{-time.Second}, ReplayCacheBytes: -1,
		ExternalOrigin: "https://api.example.com/path", Nonce: DPoPNonceConfig{SecretFile: "/x"}}
	cfg.Routes = []Route{
		{Action: ActionRequired, DPoP: "always", BindNetwork: &BindNetwork{IPv4Prefix: intp(33), IPv6Prefix: intp(-1)}},
		{Action: ActionRequired, BindDevice: &BindDevice{Cookie: "a", Header: "b"}},
		{Action: ActionRequired, BindDevice: &BindDevice{Header: "Authorization"}},
		{Action: ActionRequired, BindDevice: &BindDevice{Cookie: "bad name"}},
	}
	cfg.Apps = []App{{Name: "web", Match: AppMatch{ContextExtensions: map[string]string{"app": "web"}}, DPoP: &AppDPoP{ExternalOrigin: "ftp://x"}}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`dpop.algorithms[1]: "HS256"`, `dpop.algorithms[2]: "none"`, "dpop.max_age: must be positive",
		"dpop.replay_cache_bytes: must be positive", "dpop.external_origin:", "dpop.nonce.secret_file:",
		`routes[0].dpop: must be optional or required, not "always"`, "routes[0].bind_network.ipv4_prefix: must be 0 to 32",
		"routes[0].bind_network.ipv6_prefix: must be 0 to 128", "routes[1].bind_device: set exactly one",
		"routes[2].bind_device.header:", "routes[3].bind_device.cookie:", "apps[0].dpop.external_origin:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// TestFindsDPoPScheme: the finder takes the token of `Authorization: DPoP`
// and says which scheme it was.
func TestFindsDPoPScheme(t *testing.T) {
	t.Parallel()
	f := tokenFinder{maxBytes: 100}
	for _, tc := range []struct {
		h, tok string
		dpop   bool
	}{
		{"DPoP abc", "abc", true}, {"dpop  abc ", "abc", true}, {"Bearer abc", "abc", false},
		{"DPoPabc", "", false}, {"Basic abc", "", false},
	} {
		r := &request{headers: map[string]string{"authorization": tc.h}}
		tok, _, _ := f.find(r)
		if tok != tc.tok || r.dpopScheme != tc.dpop {
			t.Errorf("%q: token %q dpop %v, want %q %v", tc.h, tok, r.dpopScheme, tc.tok, tc.dpop)
		}
	}
}

// TestConfirmationNoAlloc: reading cnf from a token without one allocates
// nothing (the common Bearer token pays no more than before).
func TestConfirmationNoAlloc(t *testing.T) {
	claims := map[string]any{"sub": "u", "iss": "i"}
	if n := testing.AllocsPerRun(100, func() { _, _ = readConfirmation(claims) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// TestDPoPReplayCacheSurvivesReload: a config reload must not make a proof
// accepted before it acceptable again (the replay cache is kept while its
// size is unchanged).
func TestDPoPReplayCacheSurvivesReload(t *testing.T) {
	t.Parallel()
	k := &dkit{t: t, es: newTestKey(t, "ES256", "es-1")}
	cfg := baseConfig(t, k.es)
	h := newHarness(t, cfg)
	k.now = h.clock.Now()
	req := k.dpopReq(k.bound())
	if a := h.check(t, req.grpcReq()); !a.allowed {
		t.Fatalf("first use: %+v", a)
	}
	cfg.Realm = "reloaded"
	if err := h.srv.Reload(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if a := h.check(t, req.grpcReq()); a.reason() != "invalid_dpop_proof" {
		t.Fatalf("replay after a reload: %+v", a)
	}
}
