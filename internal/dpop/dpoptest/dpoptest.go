// Package dpoptest makes DPoP proofs for tests (refresher, extauthz, e2e):
// real keys, proofs signed for real, every header member and claim open to
// change before signing so a test can also make a bad proof.
package dpoptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/dpop"
)

// Key is a client's DPoP key pair.
type Key struct {
	t   testing.TB
	alg string
	// signer is the private key: *ecdsa.PrivateKey, *rsa.PrivateKey or
	// ed25519.PrivateKey.
	signer crypto.Signer
	jwk    map[string]any
	jkt    string
}

// NewKey generates a key for alg: "ES256" (the browser client's), "ES384",
// "RS256", "PS256" or "EdDSA" (also "ES512", "RS384", "RS512", "PS384",
// "PS512").
func NewKey(t testing.TB, alg string) *Key {
	t.Helper()
	switch alg {
	case "ES256", "ES384", "ES512":
		curve := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		priv, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatalf("dpoptest: %v", err)
		}
		return FromSigner(t, alg, priv)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return NewRSAKey(t, alg, 2048)
	case "EdDSA":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatalf("dpoptest: %v", err)
		}
		return FromSigner(t, alg, priv)
	}
	t.Fatalf("dpoptest: unknown alg %q", alg)
	return nil
}

// NewRSAKey generates an RSA key of the given size for an RS* or PS* alg
// (a size below 2048 makes a key the verifier must refuse).
func NewRSAKey(t testing.TB, alg string, bits int) *Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("dpoptest: %v", err)
	}
	return FromSigner(t, alg, priv)
}

// FromSigner wraps an existing private key (*ecdsa.PrivateKey,
// *rsa.PrivateKey or ed25519.PrivateKey) signing with alg.
func FromSigner(t testing.TB, alg string, signer crypto.Signer) *Key {
	t.Helper()
	k := &Key{t: t, alg: alg, signer: signer}
	b64 := base64.RawURLEncoding.EncodeToString
	switch priv := signer.(type) {
	case *ecdsa.PrivateKey:
		size := (priv.Curve.Params().BitSize + 7) / 8
		pub, err := priv.PublicKey.Bytes() // 0x04 || x || y
		if err != nil {
			t.Fatalf("dpoptest: %v", err)
		}
		k.jwk = map[string]any{"kty": "EC", "crv": priv.Curve.Params().Name, "x": b64(pub[1 : 1+size]), "y": b64(pub[1+size:])}
	case *rsa.PrivateKey:
		k.jwk = map[string]any{"kty": "RSA", "n": b64(priv.N.Bytes()), "e": b64(big.NewInt(int64(priv.E)).Bytes())}
	case ed25519.PrivateKey:
		k.jwk = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(priv.Public().(ed25519.PublicKey))}
	default:
		t.Fatalf("dpoptest: unsupported key type %T", signer)
	}
	k.jkt = thumbprint(k.jwk)
	return k
}

// thumbprint is RFC 7638 computed independently of package dpop: the
// required members (all of jwk's) in lexicographic order, which is what
// encoding/json writes for a map.
func thumbprint(jwk map[string]any) string {
	b, err := json.Marshal(jwk)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Alg is the algorithm the key signs with.
func (k *Key) Alg() string { return k.alg }

// Public is the public key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// JWK is a fresh copy of the public key as a JWK.
func (k *Key) JWK() map[string]any {
	m := make(map[string]any, len(k.jwk))
	for n, v := range k.jwk {
		m[n] = v
	}
	return m
}

// JKT is the key's RFC 7638 thumbprint (the `cnf.jkt` a bound token carries).
func (k *Key) JKT() string { return k.jkt }

// Opt changes one proof.
type Opt func(*Spec)

// Spec is everything a proof is built from; Opts edit it before signing.
type Spec struct {
	Header map[string]any // typ, alg, jwk set by Proof; edit or delete freely
	Claims map[string]any // jti, htm, htu, iat set by Proof
}

// WithATH adds `ath` for the access token.
func WithATH(token string) Opt {
	return func(s *Spec) { s.Claims["ath"] = dpop.AccessTokenHash(token) }
}

// WithNonce adds `nonce`.
func WithNonce(nonce string) Opt { return func(s *Spec) { s.Claims["nonce"] = nonce } }

// WithIAT sets `iat`.
func WithIAT(t time.Time) Opt { return func(s *Spec) { s.Claims["iat"] = t.Unix() } }

// WithJTI sets `jti` (default: 16 random bytes, base64url).
func WithJTI(jti string) Opt { return func(s *Spec) { s.Claims["jti"] = jti } }

// Edit runs f on the spec (any header or claim change).
func Edit(f func(*Spec)) Opt { return f }

// Proof signs a proof for method and url (htu is url as given), iat now
// (time.Now: pass WithIAT under a fake clock). The signature is always made
// with the key's own algorithm, whatever an Opt puts in the header's alg.
func (k *Key) Proof(method, url string, opts ...Opt) string {
	k.t.Helper()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		k.t.Fatalf("dpoptest: %v", err)
	}
	s := &Spec{
		Header: map[string]any{"typ": "dpop+jwt", "alg": k.alg, "jwk": k.JWK()},
		Claims: map[string]any{
			"jti": base64.RawURLEncoding.EncodeToString(jti),
			"htm": method,
			"htu": url,
			"iat": time.Now().Unix(),
		},
	}
	for _, o := range opts {
		o(s)
	}
	h, err := json.Marshal(s.Header)
	if err != nil {
		k.t.Fatalf("dpoptest: header: %v", err)
	}
	c, err := json.Marshal(s.Claims)
	if err != nil {
		k.t.Fatalf("dpoptest: claims: %v", err)
	}
	return k.SignRaw(h, c)
}

// SignRaw signs the given header and payload bytes as they are (for proofs
// whose JSON a map cannot express, such as duplicate members) and returns
// the compact JWS.
func (k *Key) SignRaw(header, payload []byte) string {
	k.t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(header) + "." + b64(payload)
	return input + "." + b64(k.sign([]byte(input)))
}

func (k *Key) sign(input []byte) []byte {
	k.t.Helper()
	hashOf := func(h crypto.Hash) []byte {
		switch h {
		case crypto.SHA256:
			s := sha256.Sum256(input)
			return s[:]
		case crypto.SHA384:
			s := sha512.Sum384(input)
			return s[:]
		}
		s := sha512.Sum512(input)
		return s[:]
	}
	hashes := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}
	switch priv := k.signer.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, priv, hashOf(hashes[k.alg[2:]]))
		if err != nil {
			k.t.Fatalf("dpoptest: %v", err)
		}
		size := (priv.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return sig
	case *rsa.PrivateKey:
		h := hashes[k.alg[2:]]
		var sig []byte
		var err error
		if k.alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, priv, h, hashOf(h), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, priv, h, hashOf(h))
		}
		if err != nil {
			k.t.Fatalf("dpoptest: %v", err)
		}
		return sig
	case ed25519.PrivateKey:
		return ed25519.Sign(priv, input)
	}
	k.t.Fatalf("dpoptest: unsupported key type %T", k.signer)
	return nil
}
