package extauthz

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokengate/tokengate/internal/dpop"
)

// DPoP (RFC 9449) on the resource side: a token whose claims carry
// `cnf.jkt` is bound to a key, and every request with it must carry a
// fresh proof signed by that key (`Authorization: DPoP <token>` and a
// `DPoP` header). The token itself is verified once and cached; the proof
// is per request, so it is checked after the cached verification, on every
// check.

// dpopState is the dpop block, ready to use.
type dpopState struct {
	verifier *dpop.Verifier
	nonces   *dpop.Nonces // nil: nonces off
	// algs is the `algs` attribute of a DPoP challenge.
	algs string
	// origin is dpop.external_origin without a trailing slash ("": none).
	origin string
	// exposeNonce: CORS answers expose DPoP-Nonce as well (nonces on).
	exposeNonce bool
}

// dpopShared are the parts of the DPoP state that outlive a config
// reload: the replay cache (a reload must not make an accepted proof
// acceptable again) and a random nonce secret (outstanding nonces stay
// valid). Kept by the Server, reused while their settings are unchanged.
type dpopShared struct {
	replayBytes int64
	replay      *dpop.ReplayCache
	nonceKey    string // secret_file and lifetime the nonces were made with
	nonces      *dpop.Nonces
}

// newDPoPState builds the dpop block of a validated config (defaults
// applied), reusing prev's replay cache and nonce source where their
// settings are unchanged.
func newDPoPState(c DPoPConfig, prev *dpopShared, clock func() time.Time) (*dpopState, *dpopShared, error) {
	sh := &dpopShared{replayBytes: c.ReplayCacheBytes}
	if prev != nil && prev.replayBytes == c.ReplayCacheBytes {
		sh.replay = prev.replay
	} else {
		sh.replay = dpop.NewReplayCache(c.ReplayCacheBytes)
	}
	ds := &dpopState{algs: strings.Join(c.Algorithms, " "), origin: strings.TrimSuffix(c.ExternalOrigin, "/")}
	if c.Nonce.Enabled {
		sh.nonceKey = c.Nonce.SecretFile + "\x00" + c.Nonce.Lifetime.String()
		var secret []byte
		if c.Nonce.SecretFile != "" {
			b, err := os.ReadFile(c.Nonce.SecretFile)
			if err != nil {
				return nil, nil, fmt.Errorf("dpop.nonce.secret_file: %w", err)
			}
			secret = bytes.TrimRight(b, "\r\n")
			if len(secret) < 32 {
				return nil, nil, fmt.Errorf("dpop.nonce.secret_file: the secret must be at least 32 bytes, not %d", len(secret))
			}
			sh.nonceKey += "\x00" + string(secret)
		}
		if prev != nil && prev.nonces != nil && prev.nonceKey == sh.nonceKey {
			sh.nonces = prev.nonces
		} else {
			n, err := dpop.NewNonces(secret, c.Nonce.Lifetime.Duration)
			if err != nil {
				return nil, nil, fmt.Errorf("dpop.nonce: %w", err)
			}
			sh.nonces = n
		}
		ds.nonces = sh.nonces
		ds.exposeNonce = true
	}
	v, err := dpop.NewVerifier(dpop.Options{
		Algorithms: c.Algorithms,
		MaxAge:     c.MaxAge.Duration,
		MaxSkew:    c.MaxSkew.Duration,
		Replay:     sh.replay,
		Nonces:     ds.nonces,
		Now:        clock,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dpop: %w", err)
	}
	ds.verifier = v
	return ds, sh, nil
}

// checkHolder is the per-request part of a verified token's check: the
// DPoP proof for a bound token (or a route that requires one), then the
// route's network and device bindings. It returns a denial, or an error
// when a forward-auth request lacks the header that would say what must be
// compared (the proxy is misconfigured); nonce is a fresh DPoP-Nonce for
// the client when its proof's nonce is getting old.
func (st *state) checkHolder(in *request, a *app, ru *rule, e *entry, token string, src tokenSource) (d *denial, nonce string, err error) {
	if d, nonce, err = st.checkProof(in, a, ru, e, token, src); d != nil || err != nil {
		return d, "", err
	}
	d, missing := ru.checkBindings(in, e)
	if missing != "" {
		return nil, "", &errNeedsHeader{st.policy.forward.proxy, missing}
	}
	if d != nil {
		if in.dpopScheme {
			c := *d // d may be shared: answer with a copy
			c.dpop = true
			d = &c
		}
		return d, "", nil
	}
	return nil, nonce, nil
}

// checkProof: a token with cnf.jkt is never accepted without a valid proof
// by that key (whatever the route says: a bound token must not downgrade
// to Bearer); a token without it is refused on a dpop: required route and
// when sent with the DPoP scheme.
func (st *state) checkProof(in *request, a *app, ru *rule, e *entry, token string, src tokenSource) (*denial, string, error) {
	jkt := e.v.cnf.jkt
	if jkt == "" {
		if ru.dpopRequired {
			return &denial{reason: ReasonInvalidToken, description: "this route requires a DPoP-bound token", dpop: true}, "", nil
		}
		if in.dpopScheme {
			return &denial{reason: ReasonInvalidToken, description: "the token is not DPoP-bound: send it with the Bearer scheme", dpop: true}, "", nil
		}
		return nil, "", nil
	}
	if src == fromHeader && !in.dpopScheme {
		return proofDenial("a DPoP-bound token must be sent with the DPoP scheme and a proof"), "", nil
	}
	proof := in.header("dpop")
	if proof == "" {
		return proofDenial("the DPoP proof header is missing"), "", nil
	}
	htu, missing := st.htu(in, a)
	if missing != "" {
		return nil, "", &errNeedsHeader{st.policy.forward.proxy, missing}
	}
	if htu == "" {
		return proofDenial("the request's scheme is unknown: the proof's htu cannot be checked (set dpop.external_origin)"), "", nil
	}
	p, err := st.dpop.verifier.Verify(proof, dpop.Request{Method: in.method, URL: htu, AccessToken: token, JKT: jkt})
	if err != nil {
		var pe *dpop.Error
		if errors.As(err, &pe) && pe.Code == dpop.CodeUseNonce && st.dpop.nonces != nil {
			return &denial{reason: ReasonUseDPoPNonce, description: pe.Description, dpop: true, nonce: st.dpop.nonces.Issue(st.clock())}, "", nil
		}
		desc := "the DPoP proof is invalid"
		if pe != nil && pe.Description != "" {
			desc = pe.Description
		}
		return proofDenial(desc), "", nil
	}
	if p.NonceStale && st.dpop.nonces != nil {
		return nil, st.dpop.nonces.Issue(st.clock()), nil
	}
	return nil, "", nil
}

func proofDenial(description string) *denial {
	return &denial{reason: ReasonInvalidDPoPProof, description: description, dpop: true}
}

// htu is the URL a proof for this request must name: the configured
// external origin (the app's, else dpop.external_origin), or the check's
// scheme and host, and the path without the query. missing names the
// forward-auth header that should have carried the scheme.
func (st *state) htu(in *request, a *app) (u, missing string) {
	origin := a.dpopOrigin
	if origin == "" {
		origin = st.dpop.origin
	}
	p := pathOnly(in.path)
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	if origin != "" {
		return origin + p, ""
	}
	switch in.scheme {
	case "http", "https":
	case "":
		return "", in.schemeMissing // gRPC: "" too, refused by the caller
	default:
		// Not a scheme a browser signs: the comparison fails.
		return strings.ToLower(in.scheme) + "://" + in.host + p, ""
	}
	return in.scheme + "://" + in.host + p, ""
}

// validate checks the dpop block (defaults applied).
func (c DPoPConfig) validate(path string, add func(string, string, ...any)) {
	for i, alg := range c.Algorithms {
		ok := false
		for _, d := range dpop.DefaultAlgorithms {
			if alg == d {
				ok = true
			}
		}
		if !ok {
			add(fmt.Sprintf("%s.algorithms[%d]", path, i), "%q is not an asymmetric JWS algorithm (one of %s)", alg, strings.Join(dpop.DefaultAlgorithms, ", "))
		}
	}
	if c.Algorithms != nil && len(c.Algorithms) == 0 {
		add(path+".algorithms", "must list at least one algorithm")
	}
	if c.MaxAge.Duration < 0 {
		add(path+".max_age", "must be positive")
	}
	if c.MaxSkew.Duration < 0 {
		add(path+".max_skew", "must be positive")
	}
	if c.ReplayCacheBytes < 0 {
		add(path+".replay_cache_bytes", "must be positive")
	}
	if c.ExternalOrigin != "" {
		validateOrigin(c.ExternalOrigin, path+".external_origin", add)
	}
	if c.Nonce.Lifetime.Duration < 0 {
		add(path+".nonce.lifetime", "must be positive")
	}
	if c.Nonce.SecretFile != "" && !c.Nonce.Enabled {
		add(path+".nonce.secret_file", "is set but nonce.enabled is false")
	}
}

// validateOrigin accepts scheme://host[:port] (http or https), nothing else.
func validateOrigin(o, path string, add func(string, string, ...any)) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		add(path, "%q is not an origin like https://api.example.com", o)
	}
}

// dpopChallenge is the RFC 9449 §7.1 challenge: `DPoP` with the error
// (invalid_dpop_proof, use_dpop_nonce, or invalid_token for a token that
// is refused as not bound), our reason (as in the Bearer challenge) and
// the algorithms a proof may use.
func (st *state) dpopChallenge(d *denial) string {
	code := "invalid_token"
	switch d.reason {
	case ReasonInvalidDPoPProof, ReasonUseDPoPNonce:
		code = string(d.reason)
	}
	return `DPoP realm="` + st.realm + `", error="` + code + `", error_description="` + quoteSafe(d.description) +
		`", reason="` + string(d.reason) + `", algs="` + st.dpop.algs + `"`
}

// denialExpose is the access-control-expose-headers of a denial: the
// challenge, the token's seconds left and, with nonces on, DPoP-Nonce.
func (st *state) denialExpose() string {
	if st.dpop != nil && st.dpop.exposeNonce {
		return "www-authenticate, " + st.expiresHeader + ", dpop-nonce"
	}
	return "www-authenticate, " + st.expiresHeader
}

// nonceAllow is an allow that tells the client a fresh DPoP-Nonce: built
// for this answer only (the cached ready-made allows are shared).
func (st *state) nonceAllow(o *outcome) *authv3.CheckResponse {
	set := headerOptions(o.set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	if o.entry != nil && o.entry.ready {
		set = o.entry.setProto
	}
	resp := st.okResponse(o, set)
	ok := resp.GetOkResponse()
	ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, headerOptions([]header{{"dpop-nonce", o.dpopNonce}}, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)...)
	if o.expose {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, headerOptions([]header{{"access-control-expose-headers", "dpop-nonce"}}, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)...)
	}
	return resp
}

// writeNonce adds the DPoP-Nonce of an allow to a forward-auth answer; the
// proxy copies it to the client's response (Envoy HTTP mode:
// allowed_client_headers_on_success; nginx: auth_request_set and
// add_header; Traefik: authResponseHeaders is upstream only, see the docs).
func writeNonce(h http.Header, o *outcome) {
	if o.denial != nil || o.unavailable != nil {
		return
	}
	h["Dpop-Nonce"] = []string{o.dpopNonce}
	if o.expose {
		h.Add("access-control-expose-headers", "dpop-nonce")
	}
}
