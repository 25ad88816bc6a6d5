package dpop

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tokengate/tokengate/internal/jsonscan"
)

// maxJTIBytes bounds `jti`: enough for any random identifier, small enough
// that a proof cannot make the replay cache hash kilobytes.
const maxJTIBytes = 256

func invalid(desc string) error { return &Error{Code: CodeInvalidProof, Description: desc} }

func useNonce(desc string) error { return &Error{Code: CodeUseNonce, Description: desc} }

// view is s as bytes without a copy, for reading only.
func view(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// header is what the JOSE header says.
type header struct {
	typ, alg       string
	jwk            []byte
	hasTyp, hasAlg bool
}

// claims is what the payload says; has* tell a member's presence.
type claims struct {
	jti, htm, htu, ath, nonce                string
	iat                                      int64 // Unix nanoseconds
	hasJTI, hasHTM, hasHTU, hasATH, hasNonce bool
	hasIAT                                   bool
}

func (v *Verifier) verify(proof string, r Request) (Proof, error) {
	if proof == "" {
		return Proof{}, invalid("no DPoP proof")
	}
	if len(proof) > v.opts.MaxBytes {
		return Proof{}, invalid("proof is longer than " + strconv.Itoa(v.opts.MaxBytes) + " bytes")
	}
	// Exactly three non-empty strict base64url segments: a ',' (two DPoP
	// headers joined), whitespace or padding is not base64url.
	d1 := strings.IndexByte(proof, '.')
	if d1 < 0 {
		return Proof{}, invalid("proof is not a compact JWS of three segments")
	}
	d2 := strings.IndexByte(proof[d1+1:], '.')
	if d2 < 0 {
		return Proof{}, invalid("proof is not a compact JWS of three segments")
	}
	d2 += d1 + 1
	if strings.IndexByte(proof[d2+1:], '.') >= 0 {
		return Proof{}, invalid("proof is not a compact JWS of three segments")
	}
	hSeg, pSeg, sSeg := proof[:d1], proof[d1+1:d2], proof[d2+1:]
	if hSeg == "" || pSeg == "" || sSeg == "" || !isB64URL(hSeg) || !isB64URL(pSeg) || !isB64URL(sSeg) {
		return Proof{}, invalid("proof segments are not base64url without padding")
	}
	// One buffer for the three decoded segments. It is never written once
	// decoded: strings read from it are views (see jsonscan.String).
	hLen, pLen, sLen := strictB64.DecodedLen(len(hSeg)), strictB64.DecodedLen(len(pSeg)), strictB64.DecodedLen(len(sSeg))
	buf := make([]byte, hLen+pLen+sLen)
	hb, ok1 := decodeSegment(buf[:hLen], hSeg)
	pb, ok2 := decodeSegment(buf[hLen:hLen+pLen], pSeg)
	sig, ok3 := decodeSegment(buf[hLen+pLen:], sSeg)
	if !ok1 || !ok2 || !ok3 {
		return Proof{}, invalid("proof segments are not base64url without padding")
	}

	h, err := parseHeader(hb)
	if err != nil {
		return Proof{}, err
	}
	if !h.hasTyp {
		return Proof{}, invalid("header typ is missing")
	}
	if h.typ != "dpop+jwt" {
		return Proof{}, invalid("header typ is not dpop+jwt")
	}
	if !h.hasAlg {
		return Proof{}, invalid("header alg is missing")
	}
	alg := v.allowed[h.alg]
	if alg == nil {
		return Proof{}, invalid("header alg is not allowed")
	}
	if h.jwk == nil {
		return Proof{}, invalid("header jwk is missing")
	}
	key, err := parseJWK(h.jwk, alg)
	if err != nil {
		return Proof{}, invalid("header " + err.Error())
	}
	c, err := parseClaims(pb)
	if err != nil {
		return Proof{}, err
	}

	if !key.verify(alg, view(proof[:d2]), sig) {
		return Proof{}, invalid("signature does not verify")
	}

	if !c.hasJTI || c.jti == "" {
		return Proof{}, invalid("claim jti is missing")
	}
	if len(c.jti) > maxJTIBytes {
		return Proof{}, invalid("claim jti is longer than 256 bytes")
	}
	if !c.hasHTM {
		return Proof{}, invalid("claim htm is missing")
	}
	if c.htm != r.Method {
		return Proof{}, invalid("claim htm does not match the request method")
	}
	if !c.hasHTU {
		return Proof{}, invalid("claim htu is missing")
	}
	if !v.htuMatches(c.htu, r.URL) {
		return Proof{}, invalid("claim htu does not match the request URL")
	}
	if !c.hasIAT {
		return Proof{}, invalid("claim iat is missing")
	}
	now := v.opts.Now()
	nowNanos := now.UnixNano()
	if nowNanos-c.iat > int64(v.opts.MaxAge) {
		return Proof{}, invalid("proof is stale: iat is older than " + v.opts.MaxAge.String())
	}
	if c.iat-nowNanos > int64(v.opts.MaxSkew) {
		return Proof{}, invalid("proof iat is in the future")
	}
	if r.AccessToken != "" {
		if !c.hasATH {
			return Proof{}, invalid("claim ath is missing")
		}
		sum := sha256.Sum256(view(r.AccessToken))
		var want [thumbprintLen]byte
		base64.RawURLEncoding.Encode(want[:], sum[:])
		if subtle.ConstantTimeCompare(view(c.ath), want[:]) != 1 {
			return Proof{}, invalid("claim ath does not match the access token")
		}
	}
	jkt := key.thumbprint()
	if r.JKT != "" && subtle.ConstantTimeCompare(view(jkt), view(r.JKT)) != 1 {
		return Proof{}, invalid("proof key does not match the token's jkt")
	}
	p := Proof{JKT: jkt, JTI: c.jti, IssuedAt: time.Unix(0, c.iat), Nonce: c.nonce}
	if v.opts.Nonces != nil {
		if !c.hasNonce || c.nonce == "" {
			return Proof{}, useNonce("a server nonce is required")
		}
		stale, err := v.opts.Nonces.Check(c.nonce, now)
		if err != nil {
			return Proof{}, useNonce(err.Error())
		}
		p.NonceStale = stale
	}
	if v.opts.Replay != nil {
		exp := c.iat + int64(v.opts.MaxAge) + int64(v.opts.MaxSkew)
		switch v.opts.Replay.record(jkt, c.jti, c.iat, exp, nowNanos) {
		case replaySeen:
			return Proof{}, invalid("proof was already used (jti replayed)")
		case replayBelowFloor:
			return Proof{}, invalid("proof is stale: older than the replay cache holds")
		}
	}
	return p, nil
}

// decodeSegment decodes one strict base64url segment into dst.
func decodeSegment(dst []byte, seg string) ([]byte, bool) {
	n, err := strictB64.Decode(dst, view(seg))
	if err != nil {
		return nil, false
	}
	return dst[:n], true
}

// htuMatches compares htu and the request URL in normal form. The common
// case, both already normal and equal, costs no allocation.
func (v *Verifier) htuMatches(htu, reqURL string) bool {
	if htu == reqURL && isPlainURL(htu) {
		return true
	}
	a, err := NormalizeURL(htu)
	if err != nil {
		return false
	}
	b, err := NormalizeURL(reqURL)
	if err != nil {
		return false
	}
	return a == b
}

// isPlainURL reports, without allocating, a URL NormalizeURL accepts and
// whose every character is unreserved, '/' or a port's ':': two equal plain
// URLs are equal in normal form.
func isPlainURL(u string) bool {
	switch {
	case strings.HasPrefix(u, "https://"):
		u = u[len("https://"):]
	case strings.HasPrefix(u, "http://"):
		u = u[len("http://"):]
	default:
		return false
	}
	end := strings.IndexByte(u, '/')
	if end < 0 {
		end = len(u)
	}
	host, path := u[:end], u[end:]
	if c := strings.IndexByte(host, ':'); c >= 0 {
		port := host[c+1:]
		host = host[:c]
		if len(port) > 5 {
			return false
		}
		n := 0
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
			n = n*10 + int(port[i]-'0')
		}
		if n > 65535 {
			return false
		}
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		if !isUnreserved(host[i]) {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		if !isUnreserved(path[i]) && path[i] != '/' {
			return false
		}
	}
	return true
}

// maxJSONDepth bounds the nesting of a proof's header, claims and jwk: a
// proof has no reason to nest deeper than the jwk object.
const maxJSONDepth = 32

// parseHeader reads the header by one pass (jsonscan.VisitObject): the
// JSON grammar, no member names at any depth equal or equal but for case
// (after unescaping), and the members read by their exact names
// (encoding/json would also fill a field "typ" from a member "TYP").
func parseHeader(b []byte) (header, error) {
	var h header
	var bad error
	err := jsonscan.VisitObject(b, maxJSONDepth, func(name string, value []byte) error {
		var ok bool
		switch name {
		case "typ":
			h.hasTyp = true
			if h.typ, ok = jsonscan.String(value); !ok {
				bad = invalid("header typ is not a string")
			}
		case "alg":
			h.hasAlg = true
			if h.alg, ok = jsonscan.String(value); !ok {
				bad = invalid("header alg is not a string")
			}
		case "jwk":
			if value[0] != '{' {
				bad = invalid("header jwk is not an object")
			}
			h.jwk = value
		case "crit":
			// No JWS extension is understood (RFC 7515 §4.1.11).
			bad = invalid("header crit is not supported")
		}
		return bad
	})
	if bad != nil {
		return h, bad
	}
	if err == jsonscan.ErrDuplicateKey {
		return h, invalid("header has duplicate member names")
	}
	if err != nil {
		return h, invalid("header is not a JSON object")
	}
	return h, nil
}

func parseClaims(b []byte) (claims, error) {
	var c claims
	var bad error
	str := func(dst *string, has *bool, value []byte, name string) {
		*has = true
		var ok bool
		if *dst, ok = jsonscan.String(value); !ok {
			bad = invalid("claim " + name + " is not a string")
		}
	}
	err := jsonscan.VisitObject(b, maxJSONDepth, func(name string, value []byte) error {
		switch name {
		case "jti":
			str(&c.jti, &c.hasJTI, value, "jti")
		case "htm":
			str(&c.htm, &c.hasHTM, value, "htm")
		case "htu":
			str(&c.htu, &c.hasHTU, value, "htu")
		case "ath":
			str(&c.ath, &c.hasATH, value, "ath")
		case "nonce":
			str(&c.nonce, &c.hasNonce, value, "nonce")
		case "iat":
			c.hasIAT = true
			iat, ok := numericDate(value)
			if !ok {
				bad = invalid("claim iat is not a NumericDate")
			}
			c.iat = iat
		}
		return bad
	})
	if bad != nil {
		return c, bad
	}
	if err == jsonscan.ErrDuplicateKey {
		return c, invalid("claims have duplicate member names")
	}
	if err != nil {
		return c, invalid("claims are not a JSON object")
	}
	return c, nil
}

// maxNumericDate keeps iat's nanoseconds inside int64 (year 2262).
const maxNumericDate = math.MaxInt64 / int64(time.Second)

// numericDate reads a JSON number of seconds since the epoch (RFC 7519
// §2; fractions allowed) as Unix nanoseconds.
func numericDate(v []byte) (int64, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	s := unsafe.String(&v[0], len(v))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > maxNumericDate {
			return 0, false
		}
		return n * int64(time.Second), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > float64(maxNumericDate) {
		return 0, false
	}
	return int64(f * float64(time.Second)), true
}
