package extauthz

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"math/big"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tokengate/tokengate/internal/jsonscan"
)

// compactToken is a token whose three segments have been checked to be
// the one canonical spelling of their bytes: the base64url alphabet, no
// padding, no line breaks, zero unused trailing bits (RFC 7515 §2 and
// RFC 4648 §3.5). jwx's own parser is more lenient (the standard alphabet,
// `=` padding and stray bits in the signature), so without this check one
// token would have dozens of spellings, each a cache key of its own.
type compactToken struct {
	// canonical is the token itself, except for an ECDSA signature with a
	// high S: (r, s) and (r, n−s) both verify, so the low-S twin is the
	// token's one spelling, the cache key and what is verified.
	canonical string
	header    jwsHeader
	payload   []byte
	// signingInput is the header and payload segments with their dot;
	// sig is the decoded (low-S) signature over it.
	signingInput string
	sig          []byte
}

// splitToken checks a token's spelling and decodes its header. It does
// not look at the payload's JSON or the signature's validity.
func splitToken(token string) (*compactToken, *denial) {
	hs, ps, ss, ok := splitCompact(token)
	if !ok {
		return nil, deny(ReasonInvalidToken, "the token is not a compact JWS")
	}
	hb, err := decodeCanonical(hs)
	if err != nil {
		return nil, deny(ReasonInvalidToken, "the token header is not canonical base64url")
	}
	payload, err := decodeCanonical(ps)
	if err != nil {
		return nil, deny(ReasonInvalidToken, "the token payload is not canonical base64url")
	}
	sig, err := decodeCanonical(ss)
	if err != nil {
		return nil, deny(ReasonInvalidToken, "the token signature is not canonical base64url")
	}
	ct := &compactToken{canonical: token, payload: payload, signingInput: token[:len(hs)+1+len(ps)], sig: sig}
	if ct.header, err = decodeHeader(hb); err != nil {
		return nil, deny(ReasonInvalidToken, "the token header is malformed")
	}
	if c := ecdsaCurveOf(ct.header.Alg); c != nil {
		changed, ok := c.lowS(sig)
		if !ok {
			return nil, deny(ReasonInvalidToken, "the signature is invalid")
		}
		if changed {
			ct.canonical = token[:len(hs)+1+len(ps)+1] + base64.RawURLEncoding.EncodeToString(sig)
		}
	}
	return ct, nil
}

// splitCompact cuts a token into three non-empty segments.
func splitCompact(token string) (header, payload, sig string, ok bool) {
	header, rest, ok1 := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || header == "" || payload == "" || sig == "" || strings.IndexByte(sig, '.') >= 0 {
		return "", "", "", false
	}
	return header, payload, sig, true
}

var strictRawURL = base64.RawURLEncoding.Strict()

// decodeCanonical decodes unpadded base64url, accepting only the spelling
// that encoding the result gives back: Go's decoder alone would skip CR
// and LF, and without Strict ignore non-zero trailing bits.
func decodeCanonical(seg string) ([]byte, error) {
	if !base64URLAlphabet(seg) {
		return nil, errors.New("not base64url")
	}
	return strictRawURL.DecodeString(seg)
}

func base64URLAlphabet(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// decodeHeader reads the protected header, which must be one JSON object
// without duplicate keys; the fields are read by their exact names (Go's
// struct decoding would also take "ALG" for "alg").
func decodeHeader(b []byte) (jwsHeader, error) {
	var h jwsHeader
	if !utf8.Valid(b) {
		return h, errors.New("not UTF-8")
	}
	m, strict, err := jsonscan.ParseObject(b, true)
	if err != nil {
		return h, err
	}
	if strict != nil {
		return h, strict
	}
	str := func(name string, dst *string) bool {
		v, ok := m[name]
		if !ok {
			return true
		}
		*dst, ok = v.(string)
		return ok
	}
	if !str("alg", &h.Alg) || !str("kid", &h.Kid) || !str("typ", &h.Typ) {
		return h, errors.New("alg, kid and typ must be strings")
	}
	if v, ok := m["crit"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return h, errors.New("crit must be a non-empty array")
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return h, errors.New("crit must hold strings")
			}
			h.Crit = append(h.Crit, s)
		}
	}
	return h, nil
}

// ecdsaCurve is what the low-S rule needs of the curve of ES256, ES384 or
// ES512 (P-256, P-384, P-521): the group order n and ⌊n/2⌋, big-endian
// and padded to the width of r and s in a JWS signature (RFC 7518 §3.4).
type ecdsaCurve struct {
	alg     string
	curve   elliptic.Curve
	hash    crypto.Hash
	n, half []byte
}

var ecdsaCurves = func() map[string]*ecdsaCurve {
	m := map[string]*ecdsaCurve{}
	for alg, c := range map[string]struct {
		curve elliptic.Curve
		hash  crypto.Hash
	}{"ES256": {elliptic.P256(), crypto.SHA256}, "ES384": {elliptic.P384(), crypto.SHA384}, "ES512": {elliptic.P521(), crypto.SHA512}} {
		size := (c.curve.Params().BitSize + 7) / 8
		n := c.curve.Params().N
		m[alg] = &ecdsaCurve{alg: alg, curve: c.curve, hash: c.hash, n: n.FillBytes(make([]byte, size)), half: new(big.Int).Rsh(n, 1).FillBytes(make([]byte, size))}
	}
	return m
}()

// ecdsaBySigLen finds the curve from the length of a signature segment
// (86, 128 and 176 characters): a guess, confirmed against the alg of the
// cached token it leads to.
var ecdsaBySigLen = func() map[int]*ecdsaCurve {
	m := map[int]*ecdsaCurve{}
	for _, c := range ecdsaCurves {
		m[base64.RawURLEncoding.EncodedLen(2*len(c.n))] = c
	}
	return m
}()

func ecdsaCurveOf(alg string) *ecdsaCurve { return ecdsaCurves[alg] }

// lowS checks an ECDSA signature's shape (r ‖ s, each the curve's width,
// 0 < s < n) and, when s > n/2, replaces s with n − s in place: (r, s) and
// (r, n−s) both verify, and the low one is the canonical spelling. ok is
// false for a signature that cannot verify; changed says s was replaced.
func (c *ecdsaCurve) lowS(sig []byte) (changed, ok bool) {
	size := len(c.n)
	if len(sig) != 2*size {
		return false, false
	}
	s := sig[size:]
	if isZero(s) || bytes.Compare(s, c.n) >= 0 {
		return false, false
	}
	if bytes.Compare(s, c.half) <= 0 {
		return false, true
	}
	borrow := 0
	for i := size - 1; i >= 0; i-- {
		d := int(c.n[i]) - int(s[i]) - borrow
		borrow = 0
		if d < 0 {
			d += 256
			borrow = 1
		}
		s[i] = byte(d)
	}
	return true, true
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// twinKey writes to buf the low-S spelling of token when token ends in a
// canonical, high-S ECDSA signature, and returns it with the curve it was
// taken for; nil when token is no such thing. It allocates nothing (given
// a large enough buf), so a cache hit by a token's high-S twin stays cheap.
func twinKey(buf []byte, token string) ([]byte, *ecdsaCurve) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return nil, nil
	}
	seg := token[i+1:]
	c := ecdsaBySigLen[len(seg)]
	if c == nil || !base64URLAlphabet(seg) {
		return nil, nil
	}
	var sig [2 * 66]byte
	// Decode only reads src: viewing the string's bytes saves a copy.
	n, err := strictRawURL.Decode(sig[:], unsafe.Slice(unsafe.StringData(seg), len(seg)))
	if err != nil || n != 2*len(c.n) {
		return nil, nil
	}
	if changed, ok := c.lowS(sig[:n]); !changed || !ok {
		return nil, nil
	}
	buf = slices.Grow(buf[:0], len(token))[:len(token)] // the twin is as long
	copy(buf, token[:i+1])
	base64.RawURLEncoding.Encode(buf[i+1:], sig[:n])
	return buf, c
}
