package store

import (
	"crypto/subtle"
	"time"
)

// Decide applies the Rotate decision table (see Store.Rotate) to a parent
// token p of session s. Backends that read both records, decide in process
// and write under one lock or transaction (memstore, boltstore) call it
// through Apply, which also builds the records to write; the issuer calls it
// to check a replay it remembers. The Redis backend applies the same table
// inside its Lua script (one round trip), the one exception: the
// conformance suite (storetest), which an independent in-test reference
// store passes too, holds it to the same answers. The caller handles row 1
// (unknown parent) before calling.
//
// S's current token is the one of generation S.Generation: each rotation
// increments both, so P's child is current exactly when
// P.Generation+1 == S.Generation.
func Decide(p Token, s Session, req RotateRequest) Outcome {
	switch {
	case !s.RevokedAt.IsZero():
		return Revoked
	case !req.Now.Before(s.ExpiresAt):
		return Expired
	case s.JKT != "" && !sameKey(s.JKT, req.JKT):
		return KeyMismatch
	case !p.RotatedAt.IsZero():
		if req.Now.Before(p.RotatedAt.Add(req.Grace)) && p.Generation+1 == s.Generation {
			return Replayed
		}
		return ReuseDetected
	case !req.Now.Before(p.ExpiresAt):
		return Expired
	}
	return Rotated
}

// sameKey compares two thumbprints in constant time. A thumbprint is not
// secret (it is in every access token of the session), but the comparison
// costs nothing and keeps the store from being a timing oracle.
func sameKey(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Writes are the records one Rotate outcome changes: what a backend that
// decides in process persists, in the same transaction or under the same
// lock as the reads it decided on. A nil field is left as it is.
type Writes struct {
	// Session is the session after the outcome: one generation on, and
	// bound to the request's key if it was unbound (Rotated), or revoked at
	// Now (ReuseDetected). KeyMismatch writes nothing. Once it changes, a
	// sealed pair kept from an earlier rotation of the session can never be
	// replayed again, and a backend may delete it (bolt does).
	Session *Session
	// Parent is the presented token, rotated at Now into Child (Rotated).
	Parent *Token
	// Child is the new token (Rotated): the request's Child with SessionID
	// and Generation set from the parent.
	Child *Token
	// Sealed is the pair the rotation issued, to keep with Parent until
	// SealedUntil (Now + Grace) so any replica can replay it (Rotated).
	Sealed      []byte
	SealedUntil time.Time
	// Revocation is the feed entry to append (ReuseDetected).
	Revocation *Revocation
}

// Apply decides a rotation (Decide) for the parent token p of session s and
// returns the answer and the records that outcome writes. It is pure: the
// backend persists the Writes as they are and returns the result, adding
// only, for Replayed, the sealed pair it keeps for p (if that has not
// expired: the pair a rotation stored lives until its SealedUntil). The
// caller handles an unknown parent (no p or no s) before calling.
func Apply(p Token, s Session, req RotateRequest) (RotateResult, Writes) {
	res := RotateResult{Outcome: Decide(p, s, req), Session: s, Parent: p}
	var w Writes
	switch res.Outcome {
	case ReuseDetected:
		s.RevokedAt = req.Now
		res.Session = s
		w.Session = &s
		w.Revocation = &Revocation{SessionID: s.ID, Subject: s.Subject, Until: req.RevokeUntil}
	case Rotated:
		p.RotatedAt = req.Now
		p.ChildHash = req.Child.Hash
		child := req.Child
		child.SessionID = s.ID
		child.Generation = p.Generation + 1
		s.Generation++
		if s.JKT == "" {
			// The rotation that first brings a key binds the session to it.
			s.JKT = req.JKT
		}
		res.Session, res.Parent = s, p
		w.Session, w.Parent, w.Child = &s, &p, &child
		w.Sealed, w.SealedUntil = req.Sealed, req.Now.Add(req.Grace)
	}
	return res, w
}
