package refresher

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is a refusal or failure with its HTTP answer: the JSON error code
// (RFC 6749 §5.2 and our additions), a description naming the problem, and,
// for 429 and 503, how long the client should wait. Reason is the metric and
// log label (finer than Code: invalid_grant has several reasons).
type Error struct {
	Status      int
	Code        string
	Description string
	Reason      string
	RetryAfter  time.Duration
	// Err is the underlying technical error (store failure), logged, never
	// sent to the client.
	Err error
	// DPoPNonce, when set, is sent as the DPoP-Nonce header (use_dpop_nonce).
	DPoPNonce string
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Description, e.Err)
	}
	return e.Code + ": " + e.Description
}

func (e *Error) Unwrap() error { return e.Err }

// The one vocabulary of answers.
func invalidRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_request", Reason: "invalid_request", Description: fmt.Sprintf(format, args...)}
}

func invalidGrant(reason, description string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_grant", Reason: reason, Description: description}
}

// invalidDPoPProof refuses a missing, malformed or invalid DPoP proof
// (RFC 9449 §5).
func invalidDPoPProof(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_dpop_proof", Reason: "invalid_dpop_proof", Description: fmt.Sprintf(format, args...)}
}

// useDPoPNonce asks the client to sign its proof again with nonce (RFC 9449 §8).
func useDPoPNonce(nonce, description string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "use_dpop_nonce", Reason: "use_dpop_nonce", Description: description, DPoPNonce: nonce}
}

func unsupportedGrantType(got string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "unsupported_grant_type", Reason: "unsupported_grant_type",
		Description: fmt.Sprintf("grant_type %q is not supported; use refresh_token", got)}
}

func unavailable(op string, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Reason: "store_unavailable",
		Description: "the session store did not answer; retry shortly", RetryAfter: time.Second, Err: fmt.Errorf("store %s: %w", op, err)}
}

func rateLimited(scope string, wait time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: "slow_down", Reason: "rate_limited_" + scope,
		Description: "too many attempts; retry after the Retry-After delay", RetryAfter: wait}
}

// crossOrigin refuses a cookie-authenticated request from a page that may
// not use the cookie (CSRF).
func crossOrigin(format string, args ...any) *Error {
	return &Error{Status: http.StatusForbidden, Code: "invalid_request", Reason: "cross_origin", Description: fmt.Sprintf(format, args...)}
}

func unauthorized() *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Reason: "admin_unauthorized",
		Description: "admin bearer token missing or wrong"}
}

func notFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Reason: "not_found", Description: what}
}

func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: "server_error", Reason: "internal",
		Description: "internal error", Err: err}
}
