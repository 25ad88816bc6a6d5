package refresher

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokengate/tokengate/internal/dpop"
)

// dpopChecks verifies the DPoP proofs of the token endpoint and of sign-in
// (RFC 9449), prepared once from the Config so a request cannot fail on
// configuration. Both verifiers share one replay cache: a proof's jti is
// accepted once, whichever endpoint sees it first.
type dpopChecks struct {
	mode DPoPMode
	// token verifies refresh proofs, with the server nonce when it is on.
	token *dpop.Verifier
	// signin verifies the proofs a login backend forwards. Never with a
	// nonce: the browser signed the proof for the login page, which has no
	// way to learn this refresher's nonce; the login backend (holding the
	// admin token) vouches for the request.
	signin *dpop.Verifier
	nonces *dpop.Nonces // nil: nonces off
	// signinURLs are the normalised htu values a forwarded proof may carry.
	signinURLs map[string]bool
	external   string // Config.ExternalURL without a trailing "/"
	algs       []string
	now        func() time.Time
}

func newDPoPChecks(cfg Config, now func() time.Time) (*dpopChecks, error) {
	d := &dpopChecks{mode: cfg.DPoP.orDefault(), external: strings.TrimSuffix(cfg.ExternalURL, "/"),
		signinURLs: map[string]bool{}, now: now}
	if d.mode == DPoPOff {
		return d, nil
	}
	opts := dpop.Options{Algorithms: cfg.DPoPAlgorithms, MaxAge: cfg.DPoPMaxAge,
		Replay: dpop.NewReplayCache(cfg.DPoPReplayCacheBytes), Now: now}
	var err error
	if d.signin, err = dpop.NewVerifier(opts); err != nil {
		return nil, fmt.Errorf("dpop: %w", err)
	}
	if cfg.DPoPNonce {
		if d.nonces, err = dpop.NewNonces(cfg.DPoPNonceSecret, cfg.DPoPNonceLifetime); err != nil {
			return nil, fmt.Errorf("dpop nonces: %w", err)
		}
		opts.Nonces = d.nonces
	}
	if d.token, err = dpop.NewVerifier(opts); err != nil {
		return nil, fmt.Errorf("dpop: %w", err)
	}
	d.algs = d.token.Algorithms()
	for i, u := range cfg.DPoPSigninURLs {
		n, err := dpop.NormalizeURL(u)
		if err != nil {
			return nil, fmt.Errorf("DPoPSigninURLs[%d]: %w", i, err)
		}
		d.signinURLs[n] = true
	}
	return d, nil
}

// ownURL is the absolute URL of path on this refresher as the browser
// addresses it: Config.ExternalURL + path, or without it the request's own
// scheme and Host (a refresher reached directly).
func (d *dpopChecks) ownURL(r *http.Request, path string) string {
	if d.external != "" {
		return d.external + path
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + path
}

// proofHeader returns the request's one DPoP header ("" for none).
func proofHeader(r *http.Request) (string, error) {
	v := r.Header.Values("DPoP")
	switch {
	case len(v) > 1:
		return "", invalidDPoPProof("DPoP: given more than once")
	case len(v) == 1 && v[0] == "":
		return "", invalidDPoPProof("DPoP: empty")
	case len(v) == 1:
		return v[0], nil
	}
	return "", nil
}

// tokenProof is what the DPoP header of a refresh proved.
type tokenProof struct {
	jkt string // "" without a proof (or with DPoP off)
	// nonce, when set, is a fresh DPoP-Nonce to send with the answer (the
	// proof's nonce is getting old).
	nonce string
}

// checkTokenProof verifies the DPoP header of POST /v1/token. With DPoP off
// the header is ignored; under required it must be there. The error is an
// *Error (invalid_dpop_proof or use_dpop_nonce).
func (d *dpopChecks) checkTokenProof(r *http.Request) (tokenProof, error) {
	if d.mode == DPoPOff {
		return tokenProof{}, nil
	}
	proof, err := proofHeader(r)
	if err != nil {
		return tokenProof{}, err
	}
	if proof == "" {
		if d.mode == DPoPRequired {
			return tokenProof{}, d.refusal(invalidDPoPProof("DPoP: a proof is required"))
		}
		return tokenProof{}, nil
	}
	p, err := d.token.Verify(proof, dpop.Request{Method: http.MethodPost, URL: d.ownURL(r, "/v1/token")})
	if err != nil {
		return tokenProof{}, d.refusal(proofError(err))
	}
	out := tokenProof{jkt: p.JKT}
	if p.NonceStale && d.nonces != nil {
		out.nonce = d.nonces.Issue(d.now())
	}
	return out, nil
}

// refusal adds a fresh nonce to every refusal while nonces are on, so a
// client learns it with its first answer.
func (d *dpopChecks) refusal(e *Error) *Error {
	if d.nonces != nil && e.DPoPNonce == "" {
		e.DPoPNonce = d.nonces.Issue(d.now())
	}
	return e
}

// proofError maps the verifier's refusal to our answer.
func proofError(err error) *Error {
	var de *dpop.Error
	if errors.As(err, &de) {
		if de.Code == dpop.CodeUseNonce {
			return useDPoPNonce("", de.Description)
		}
		return invalidDPoPProof("DPoP: %s", de.Description)
	}
	return invalidDPoPProof("DPoP: invalid proof")
}

// checkSigninProof verifies a proof a login backend forwarded to POST
// /v1/sessions: htm POST and an htu that is one of the configured sign-in
// URLs or this refresher's own /v1/sessions URL. It returns the key's
// thumbprint ("" without a header, and always with DPoP off).
func (d *dpopChecks) checkSigninProof(r *http.Request) (string, error) {
	if d.mode == DPoPOff {
		return "", nil
	}
	proof, err := proofHeader(r)
	if err != nil || proof == "" {
		return "", err
	}
	// The proof names its own htu; it must be one this refresher accepts
	// before the proof is verified against it.
	htu, err := peekHTU(proof)
	if err != nil {
		return "", invalidDPoPProof("DPoP: %v", err)
	}
	n, err := dpop.NormalizeURL(htu)
	if err != nil {
		return "", invalidDPoPProof("DPoP: htu: not an absolute http(s) URL")
	}
	own, _ := dpop.NormalizeURL(d.ownURL(r, "/v1/sessions"))
	if !d.signinURLs[n] && n != own {
		return "", invalidDPoPProof("DPoP: htu %q is not a sign-in URL of this refresher (--dpop-signin-urls)", htu)
	}
	p, err := d.signin.Verify(proof, dpop.Request{Method: http.MethodPost, URL: htu})
	if err != nil {
		return "", proofError(err)
	}
	return p.JKT, nil
}

// maxProofBytes matches the verifier's default bound on a proof's length.
const maxProofBytes = 8192

// peekHTU reads the htu claim of a proof before it is verified, only to
// choose which URL to verify it against; the verifier then checks every
// part of the proof, htu included.
func peekHTU(proof string) (string, error) {
	if len(proof) > maxProofBytes {
		return "", errors.New("proof too long")
	}
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("payload is not base64url")
	}
	var claims struct {
		HTU string `json:"htu"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.HTU == "" {
		return "", errors.New("htu: missing")
	}
	return claims.HTU, nil
}
