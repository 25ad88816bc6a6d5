package store

// Decide applies the Rotate decision table (see Store.Rotate) to a parent
// token p of session s, for backends that read both records, decide in
// process and write under one lock or transaction (memstore, boltstore). The
// Redis backend applies the same table inside its Lua script. The caller
// handles row 1 (unknown parent) before calling.
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
