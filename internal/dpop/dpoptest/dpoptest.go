// Package dpoptest makes DPoP proofs for tests (refresher, extauthz, e2e).
//
// CONTRACT (stub): filled in by the dpop-core work.
package dpoptest

import (
	"testing"
	"time"
)

// Key is a client's DPoP key pair.
type Key struct{}

// NewKey generates a key for alg: "ES256" (the browser client's), "ES384",
// "RS256", "PS256" or "EdDSA".
func NewKey(t testing.TB, alg string) *Key {
	t.Helper()
	t.Fatal("dpoptest: not implemented")
	return nil
}

// JKT is the key's RFC 7638 thumbprint (the `cnf.jkt` a bound token carries).
func (k *Key) JKT() string { return "" }

// Opt changes one proof.
type Opt func(*Spec)

// Spec is everything a proof is built from; Opts edit it before signing.
type Spec struct {
	Header map[string]any // typ, alg, jwk set by Proof; edit or delete freely
	Claims map[string]any // jti, htm, htu, iat set by Proof
}

// WithATH adds `ath` for the access token.
func WithATH(token string) Opt { return func(s *Spec) {} }

// WithNonce adds `nonce`.
func WithNonce(nonce string) Opt { return func(s *Spec) {} }

// WithIAT sets `iat`.
func WithIAT(t time.Time) Opt { return func(s *Spec) {} }

// WithJTI sets `jti` (default: 16 random bytes, base64url).
func WithJTI(jti string) Opt { return func(s *Spec) {} }

// Edit runs f on the spec (any header or claim change).
func Edit(f func(*Spec)) Opt { return f }

// Proof signs a proof for method and url (htu is url as given).
func (k *Key) Proof(method, url string, opts ...Opt) string { return "" }
