package extauthz

import "net/http"

// Reason is the one vocabulary of outcomes: the JSON `error` of a denial, the
// `reason` label of tokengate_extauthz_checks_total and the `reason` log
// field are all this value.
type Reason string

// Denial reasons. A frontend refreshes on token_expired only; every other
// 401 means "sign in again".
const (
	ReasonMissingToken      Reason = "missing_token"
	ReasonTokenExpired      Reason = "token_expired"
	ReasonInvalidToken      Reason = "invalid_token"
	ReasonTokenRevoked      Reason = "token_revoked"
	ReasonInsufficientScope Reason = "insufficient_scope"
	// ReasonUnknownApp: the request's app selector (a context extension
	// or forward_auth.app_header) names no configured app. 403: a proxy
	// configuration mistake, never judged by another app's rules.
	ReasonUnknownApp Reason = "unknown_app"
	// ReasonInvalidDPoPProof: the token is DPoP-bound (cnf.jkt) and the
	// request lacks a valid proof by its key (missing, invalid, replayed,
	// another key, or the token sent as Bearer), or a route requires DPoP
	// and the proof is refused. 401 with a DPoP challenge.
	ReasonInvalidDPoPProof Reason = "invalid_dpop_proof"
	// ReasonUseDPoPNonce: DPoP nonces are on and the proof lacks a valid
	// one; the answer carries a fresh DPoP-Nonce to sign the retry with.
	ReasonUseDPoPNonce Reason = "use_dpop_nonce"
	// ReasonTokenUnbound: a route binds tokens to the client's network or
	// device and the request does not match the token's (or the token
	// carries no such binding). The client refreshes once: a fresh token
	// is bound to where it is now.
	ReasonTokenUnbound Reason = "token_unbound"
)

// Allow reasons (metric label and log field only).
const (
	ReasonVerified  Reason = "verified"  // a valid token; identity injected
	ReasonAnonymous Reason = "anonymous" // public/optional route without a usable token
	ReasonPreflight Reason = "preflight" // CORS preflight let through
)

// ReasonUnavailable is the error outcome: the token's provider has never
// loaded keys, so no decision is possible (gRPC UNAVAILABLE, HTTP 503).
const ReasonUnavailable Reason = "keys_unavailable"

// ReasonRevocationsUnavailable is the error outcome of a token with a `sid`
// while the revocation denylist has never synced: it cannot tell whether the
// session was revoked before extauthz started (gRPC UNAVAILABLE, HTTP 503).
const ReasonRevocationsUnavailable Reason = "revocations_unavailable"

// Decisions, the `decision` metric label.
const (
	decisionAllow = "allow"
	decisionDeny  = "deny"
	decisionError = "error"
)

// HTTPStatus is the status of a denial with this reason.
func (r Reason) HTTPStatus() int {
	switch r {
	case ReasonInsufficientScope, ReasonUnknownApp:
		return http.StatusForbidden
	case ReasonUnavailable, ReasonRevocationsUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}

// denial is a refused token or request: not an error of ours, an answer.
// description is safe to show the client (it never contains the token).
type denial struct {
	reason      Reason
	description string
	scope       string // insufficient_scope: what the route needs
	// dpop: the challenge is `WWW-Authenticate: DPoP` (RFC 9449 §7.1)
	// instead of Bearer.
	dpop bool
	// nonce, for use_dpop_nonce: the DPoP-Nonce header of the answer.
	nonce string
}

func (d *denial) Error() string { return string(d.reason) + ": " + d.description }

func deny(r Reason, description string) *denial { return &denial{reason: r, description: description} }

// errUnavailable is a technical failure: a provider without keys, or a
// token whose kid waits for a JWKS refetch (kidPending).
type errUnavailable struct {
	provider   string
	kidPending bool
}

func (e *errUnavailable) Error() string {
	if e.kidPending {
		return "provider " + e.provider + ": the token's kid is not loaded yet; a JWKS refetch is pending"
	}
	return "provider " + e.provider + " has not loaded any keys yet"
}
