package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"math/big"

	"github.com/tokengate/tokengate/internal/jsonscan"
)

// family is a JWS algorithm's kind of key and signature.
type family uint8

const (
	famEC family = iota + 1
	famRSA
	famPSS
	famEd
)

// algorithm is one JWS algorithm (RFC 7518 §3.1, RFC 8037 §3.1).
type algorithm struct {
	name   string
	family family
	hash   crypto.Hash
	// EC only: the curve, its JWK name and its coordinate length in bytes.
	curve elliptic.Curve
	crv   string
	size  int
}

var algorithms = map[string]*algorithm{
	"ES256": {name: "ES256", family: famEC, hash: crypto.SHA256, curve: elliptic.P256(), crv: "P-256", size: 32},
	"ES384": {name: "ES384", family: famEC, hash: crypto.SHA384, curve: elliptic.P384(), crv: "P-384", size: 48},
	"ES512": {name: "ES512", family: famEC, hash: crypto.SHA512, curve: elliptic.P521(), crv: "P-521", size: 66},
	"RS256": {name: "RS256", family: famRSA, hash: crypto.SHA256},
	"RS384": {name: "RS384", family: famRSA, hash: crypto.SHA384},
	"RS512": {name: "RS512", family: famRSA, hash: crypto.SHA512},
	"PS256": {name: "PS256", family: famPSS, hash: crypto.SHA256},
	"PS384": {name: "PS384", family: famPSS, hash: crypto.SHA384},
	"PS512": {name: "PS512", family: famPSS, hash: crypto.SHA512},
	"EdDSA": {name: "EdDSA", family: famEd},
}

// RSA modulus bounds: below 2048 bits is too weak (RFC 7518 §3.3 requires
// 2048); above 8192 bits a proof would make every request pay for a
// verification the client chose to make expensive.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// jwkPrivateMembers are the members of private (or symmetric) JWKs
// (RFC 7518 §6.2.2, §6.3.2, §6.4.1): a proof's jwk carrying any of them is
// refused, whatever its kty.
var jwkPrivateMembers = map[string]bool{"d": true, "p": true, "q": true, "dp": true, "dq": true, "qi": true, "oth": true, "k": true}

// publicKey is a proof's jwk, checked against its alg.
type publicKey struct {
	// The members the RFC 7638 thumbprint covers, as in the jwk.
	kty, crv, x, y, n, e string
	ec                   *ecdsa.PublicKey
	rsa                  *rsa.PublicKey
	ed                   ed25519.PublicKey
}

// strictB64 decodes base64url without padding and with zero trailing bits.
var strictB64 = base64.RawURLEncoding.Strict()

// isB64URL reports whether s uses only the base64url alphabet (the decoder
// alone would skip '\r' and '\n').
func isB64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// decodeMember decodes a jwk member that must be strict base64url of
// exactly want bytes (want 0: any length up to len(dst)).
func decodeMember(dst []byte, s string, want int) ([]byte, bool) {
	if !isB64URL(s) || strictB64.DecodedLen(len(s)) > len(dst) {
		return nil, false
	}
	n, err := strictB64.Decode(dst, []byte(s))
	if err != nil || (want > 0 && n != want) {
		return nil, false
	}
	return dst[:n], true
}

func keyError(desc string) error { return errors.New(desc) }

// parseJWK reads the jwk header member and checks it is a public key of the
// kind alg needs.
func parseJWK(raw []byte, a *algorithm) (publicKey, error) {
	var k publicKey
	var bad error
	if len(raw) == 0 || raw[0] != '{' {
		return k, keyError("jwk is not an object")
	}
	err := jsonscan.VisitObject(raw, maxJSONDepth, func(name string, value []byte) error {
		var dst *string
		switch name {
		case "kty":
			dst = &k.kty
		case "crv":
			dst = &k.crv
		case "x":
			dst = &k.x
		case "y":
			dst = &k.y
		case "n":
			dst = &k.n
		case "e":
			dst = &k.e
		default:
			if jwkPrivateMembers[name] {
				bad = keyError("jwk contains private key members")
				return bad
			}
			return nil
		}
		s, ok := jsonscan.String(value)
		if !ok {
			bad = keyError("jwk member " + name + " is not a string")
			return bad
		}
		*dst = s
		return nil
	})
	if bad != nil {
		return k, bad
	}
	if err != nil {
		return k, keyError("jwk is not a JSON object without duplicate members")
	}
	switch a.family {
	case famEC:
		if k.kty != "EC" {
			return k, keyError("jwk kty does not match alg " + a.name)
		}
		if k.crv != a.crv {
			return k, keyError("jwk crv does not match alg " + a.name)
		}
		var point [1 + 2*66]byte
		point[0] = 4
		if _, ok := decodeMember(point[1:1+a.size], k.x, a.size); !ok {
			return k, keyError("jwk x is not a " + a.crv + " coordinate")
		}
		if _, ok := decodeMember(point[1+a.size:1+2*a.size], k.y, a.size); !ok {
			return k, keyError("jwk y is not a " + a.crv + " coordinate")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(a.curve, point[:1+2*a.size])
		if err != nil {
			return k, keyError("jwk is not a point on " + a.crv)
		}
		k.ec = pub
	case famRSA, famPSS:
		if k.kty != "RSA" {
			return k, keyError("jwk kty does not match alg " + a.name)
		}
		var nb [maxRSABits/8 + 3]byte
		n, ok := decodeMember(nb[:], k.n, 0)
		// RFC 7518 §6.3.1.1: the minimum number of octets (no leading zero).
		if !ok || len(n) == 0 || n[0] == 0 {
			return k, keyError("jwk n is not a base64url modulus")
		}
		bits := (len(n)-1)*8 + bitLen(n[0])
		if bits < minRSABits || bits > maxRSABits {
			return k, keyError("jwk n is not between 2048 and 8192 bits")
		}
		var eb [8]byte
		e, ok := decodeMember(eb[:], k.e, 0)
		if !ok || len(e) == 0 || len(e) > 4 || e[0] == 0 {
			return k, keyError("jwk e is not a base64url exponent")
		}
		exp := 0
		for _, c := range e {
			exp = exp<<8 | int(c)
		}
		if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
			return k, keyError("jwk e is not an odd exponent between 3 and 2^31-1")
		}
		k.rsa = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case famEd:
		if k.kty != "OKP" {
			return k, keyError("jwk kty does not match alg " + a.name)
		}
		if k.crv != "Ed25519" {
			return k, keyError("jwk crv is not Ed25519")
		}
		var xb [ed25519.PublicKeySize + 3]byte
		x, ok := decodeMember(xb[:], k.x, ed25519.PublicKeySize)
		if !ok {
			return k, keyError("jwk x is not an Ed25519 public key")
		}
		k.ed = ed25519.PublicKey(append([]byte(nil), x...))
	}
	return k, nil
}

func bitLen(b byte) int {
	n := 0
	for ; b != 0; b >>= 1 {
		n++
	}
	return n
}

// thumbprint is the RFC 7638 SHA-256 thumbprint: the required members in
// lexicographic order, no whitespace. The member values were checked to be
// base64url (or are fixed names), so none needs escaping.
func (k *publicKey) thumbprint() string {
	var buf [64 + 2*(maxRSABits/6+4)]byte
	b := buf[:0]
	switch k.kty {
	case "EC":
		b = append(b, `{"crv":"`...)
		b = append(b, k.crv...)
		b = append(b, `","kty":"EC","x":"`...)
		b = append(b, k.x...)
		b = append(b, `","y":"`...)
		b = append(b, k.y...)
		b = append(b, `"}`...)
	case "RSA":
		b = append(b, `{"e":"`...)
		b = append(b, k.e...)
		b = append(b, `","kty":"RSA","n":"`...)
		b = append(b, k.n...)
		b = append(b, `"}`...)
	case "OKP":
		b = append(b, `{"crv":"`...)
		b = append(b, k.crv...)
		b = append(b, `","kty":"OKP","x":"`...)
		b = append(b, k.x...)
		b = append(b, `"}`...)
	}
	sum := sha256.Sum256(b)
	var out [thumbprintLen]byte
	base64.RawURLEncoding.Encode(out[:], sum[:])
	return string(out[:])
}

// thumbprintLen is the length of a SHA-256 in base64url without padding
// (a jkt, an ath).
const thumbprintLen = (sha256.Size*8 + 5) / 6

// verify checks sig over the JWS signing input.
func (k *publicKey) verify(a *algorithm, input, sig []byte) bool {
	if a.family == famEd {
		return ed25519.Verify(k.ed, input, sig)
	}
	var sum [sha512.Size]byte
	var digest []byte
	switch a.hash {
	case crypto.SHA256:
		s := sha256.Sum256(input)
		digest = append(sum[:0], s[:]...)
	case crypto.SHA384:
		s := sha512.Sum384(input)
		digest = append(sum[:0], s[:]...)
	default:
		s := sha512.Sum512(input)
		digest = append(sum[:0], s[:]...)
	}
	switch a.family {
	case famEC:
		// JWS carries r||s, each the curve's length (RFC 7518 §3.4); the
		// standard library verifies ASN.1, built here without big.Int.
		if len(sig) != 2*a.size {
			return false
		}
		var der [8 + 2*(66+3)]byte
		return ecdsa.VerifyASN1(k.ec, digest, ecdsaDER(der[:0], sig[:a.size], sig[a.size:]))
	case famRSA:
		return rsa.VerifyPKCS1v15(k.rsa, a.hash, digest, sig) == nil
	case famPSS:
		// RFC 7518 §3.5: the salt is as long as the hash.
		return rsa.VerifyPSS(k.rsa, a.hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: a.hash}) == nil
	}
	return false
}

// ecdsaDER encodes SEQUENCE { INTEGER r, INTEGER s } (r and s big-endian
// unsigned). Lengths stay below 256 (P-521: 2 × 69 bytes).
func ecdsaDER(b, r, s []byte) []byte {
	r, s = trimZeros(r), trimZeros(s)
	ilen := func(x []byte) int {
		if x[0]&0x80 != 0 {
			return len(x) + 1
		}
		return len(x)
	}
	body := 2 + ilen(r) + 2 + ilen(s)
	b = append(b, 0x30)
	if body >= 0x80 {
		b = append(b, 0x81)
	}
	b = append(b, byte(body))
	for _, x := range [2][]byte{r, s} {
		b = append(b, 0x02, byte(ilen(x)))
		if x[0]&0x80 != 0 {
			b = append(b, 0)
		}
		b = append(b, x...)
	}
	return b
}

// trimZeros drops leading zero bytes, keeping one byte for zero.
func trimZeros(x []byte) []byte {
	for len(x) > 1 && x[0] == 0 {
		x = x[1:]
	}
	return x
}
