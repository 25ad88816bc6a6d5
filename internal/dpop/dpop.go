// Package dpop verifies DPoP proofs (RFC 9449): the per-request JWTs a
// client signs with its own key to show it holds the key a token is bound
// to. The refresher (authorization-server side) and extauthz
// (resource-server side) share this one verifier; the caller supplies what
// the proof must match (method, URL, access token, key thumbprint).
//
// The checks run cheapest first: the proof's shape (three strict base64url
// segments, JSON objects without duplicate members, typ, alg, jwk), then
// the signature, then the claims against the request, then the nonce; a
// proof that passed all of them is recorded in the replay cache last, so a
// refused proof never fills it.
package dpop

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error codes (RFC 9449 §5, §7.1, §8): the OAuth `error` of a refused proof.
const (
	CodeInvalidProof = "invalid_dpop_proof"
	CodeUseNonce     = "use_dpop_nonce"
)

// DefaultAlgorithms is the default allowlist: asymmetric JWS algorithms only
// (RFC 9449 §4.2: `none` and MACs are never allowed; they cannot be
// configured either).
var DefaultAlgorithms = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}

// Error is a refused proof. Description is safe to show the client (never
// contains the proof or a token).
type Error struct {
	Code        string // CodeInvalidProof or CodeUseNonce
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// Proof is what a verified proof says.
type Proof struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof's public key,
	// base64url without padding: the value of `cnf.jkt`.
	JKT      string
	JTI      string
	IssuedAt time.Time
	// Nonce is the proof's `nonce` claim ("" when it has none).
	Nonce string
	// NonceStale: nonces are on and this proof's nonce is past half its
	// lifetime; the server should send a fresh DPoP-Nonce with its answer.
	NonceStale bool
}

// Request is what a proof must match.
type Request struct {
	// Method is the HTTP method of the request; `htm` must equal it exactly.
	Method string
	// URL is the request's absolute URL (scheme://host[:port]/path; a query
	// or fragment is ignored). `htu` must equal it after NormalizeURL on
	// both sides (RFC 9449 §4.3: RFC 3986 syntax- and scheme-based
	// normalisation, query and fragment ignored).
	URL string
	// AccessToken, when not empty, requires `ath` = base64url(SHA-256(token)).
	// When empty, `ath` is not checked (token requests carry none).
	AccessToken string
	// JKT, when not empty, requires the proof's key thumbprint to equal it
	// (constant-time comparison).
	JKT string
}

// Options configures a Verifier. Zero values take the defaults noted.
type Options struct {
	// Algorithms is the allowlist (default DefaultAlgorithms). A name
	// outside DefaultAlgorithms is a NewVerifier error.
	Algorithms []string
	// MaxAge is how long after its `iat` a proof is accepted (default 60s).
	MaxAge time.Duration
	// MaxSkew is how far in the future `iat` may be (default 5s).
	MaxSkew time.Duration
	// MaxBytes bounds the proof's length (default 8192).
	MaxBytes int
	// Replay records every accepted (jkt, jti); nil disables the check
	// (callers in production always set it).
	Replay *ReplayCache
	// Nonces, when set, requires a valid server nonce in every proof: a
	// missing, foreign or expired nonce is CodeUseNonce.
	Nonces *Nonces
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verifier checks proofs. Safe for concurrent use.
type Verifier struct {
	opts    Options
	allowed map[string]*algorithm
}

// Defaults of Options.
const (
	DefaultMaxAge   = 60 * time.Second
	DefaultMaxSkew  = 5 * time.Second
	DefaultMaxBytes = 8192
)

// NewVerifier checks the options and returns a Verifier.
func NewVerifier(o Options) (*Verifier, error) {
	var errs []error
	if len(o.Algorithms) == 0 {
		o.Algorithms = DefaultAlgorithms
	}
	allowed := make(map[string]*algorithm, len(o.Algorithms))
	names := make([]string, 0, len(o.Algorithms))
	for _, name := range o.Algorithms {
		a, ok := algorithms[name]
		if !ok {
			errs = append(errs, fmt.Errorf("dpop: algorithms: %q is not one of %s", name, strings.Join(DefaultAlgorithms, ", ")))
			continue
		}
		if allowed[name] == nil {
			allowed[name] = a
			names = append(names, name)
		}
	}
	o.Algorithms = names
	if o.MaxAge < 0 {
		errs = append(errs, errors.New("dpop: max_age: must not be negative"))
	} else if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxSkew < 0 {
		errs = append(errs, errors.New("dpop: max_skew: must not be negative"))
	} else if o.MaxSkew == 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.MaxBytes < 0 {
		errs = append(errs, errors.New("dpop: max_bytes: must not be negative"))
	} else if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Verifier{opts: o, allowed: allowed}, nil
}

// Algorithms is the allowlist, for WWW-Authenticate's `algs` and the
// authorization server metadata's dpop_signing_alg_values_supported.
func (v *Verifier) Algorithms() []string { return v.opts.Algorithms }

// Verify checks one DPoP header value against r: compact JWS with exactly
// three strict base64url segments (no padding); header `typ` dpop+jwt, `alg`
// in the allowlist, `jwk` a public key only (no private members, kty EC,
// RSA ≥ 2048 bits or OKP Ed25519, curve matching alg); signature; claims
// `jti` (non-empty, ≤ 256 bytes), `htm`, `htu`, `iat` (within MaxAge in
// the past, MaxSkew in the future), `ath` when r.AccessToken is set, the
// thumbprint when r.JKT is set, the nonce when Nonces is set; duplicate
// JSON member names are refused. The (jkt, jti) is recorded last, only for
// a proof that passed every other check. The error is always a *Error.
//
// Descriptions never echo the proof's values (they may reach a response
// header); they name the member that failed.
func (v *Verifier) Verify(proof string, r Request) (Proof, error) {
	return v.verify(proof, r)
}

// AccessTokenHash is `ath`: base64url(SHA-256(token)) without padding.
func AccessTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
