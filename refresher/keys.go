package refresher

import (
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/tokengate/tokengate/internal/keyset"
)

// signingKeys holds the active signer and the published JWKS, prepared once
// per key set so signing and serving JWKS cannot fail per request. It can be
// swapped at run time (Server.SetKeys) to switch the signer without a
// restart; see docs/refresher.md for the rotation procedure.
type signingKeys struct {
	cur atomic.Pointer[preparedKeys]
}

type preparedKeys struct {
	keys *keyset.Keys
	kid  string
	jwks []byte
	opt  jws.SignOption
}

func prepareKeys(k *keyset.Keys) (*preparedKeys, error) {
	if k == nil || k.Signer == nil {
		return nil, fmt.Errorf("no signing key")
	}
	jwks, err := k.PublicJSON()
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	kid := k.SignerKID()
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "at+jwt"); err != nil {
		return nil, err
	}
	if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
		return nil, err
	}
	return &preparedKeys{
		keys: k,
		kid:  kid,
		jwks: jwks,
		opt:  jws.WithKey(k.SignerAlg(), k.Signer, jws.WithProtectedHeaders(hdr)),
	}, nil
}

func (s *signingKeys) set(k *keyset.Keys) error {
	p, err := prepareKeys(k)
	if err != nil {
		return err
	}
	s.cur.Store(p)
	return nil
}

// sign makes a compact JWS of claims with the active key; the header carries
// typ at+jwt (RFC 9068), alg and kid.
func (s *signingKeys) sign(claims map[string]any) (string, string, error) {
	p := s.cur.Load()
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", "", fmt.Errorf("encode claims: %w", err)
	}
	out, err := jws.Sign(payload, p.opt)
	if err != nil {
		return "", "", fmt.Errorf("sign access token: %w", err)
	}
	return string(out), p.kid, nil
}

func (s *signingKeys) jwks() []byte { return s.cur.Load().jwks }
