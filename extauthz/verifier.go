package extauthz

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/tokengate/tokengate/internal/jsonscan"
)

// supportedAlgs are the signature algorithms a provider may allow.
var supportedAlgs = map[string]jwa.SignatureAlgorithm{
	"ES256": jwa.ES256(), "ES384": jwa.ES384(), "ES512": jwa.ES512(),
	"RS256": jwa.RS256(), "RS384": jwa.RS384(), "RS512": jwa.RS512(),
	"PS256": jwa.PS256(), "PS384": jwa.PS384(), "PS512": jwa.PS512(),
	"EdDSA": jwa.EdDSA(), "HS256": jwa.HS256(),
}

func supportedAlg(name string) bool { _, ok := supportedAlgs[name]; return ok }

// provider verifies the tokens of one issuer.
type provider struct {
	name        string
	issuer      string
	audiences   []string
	algs        map[string]jwa.SignatureAlgorithm
	leeway      time.Duration
	maxLifetime time.Duration
	requireTyp  bool
	hmac        *verifyKey // HS256 secret, when configured
	keys        *keySource // nil when only an HMAC secret is configured
	url         *urlSource
	discovery   *discovery // set with discovery: true (url is then nil)

	// allowedRoles, when not nil, is every role the issuer may assert;
	// subjectPrefix must begin every sub.
	allowedRoles  map[string]bool
	subjectPrefix string
}

// ready reports whether the provider can verify anything.
func (p *provider) ready() bool { return p.keys == nil || p.keys.loaded() }

// hasKey reports whether the key that verified a cached token is still in
// the set; a key that left the set (rotated out, revoked) drops its tokens.
func (p *provider) hasKey(id string) bool {
	if p.hmac != nil && id == p.hmac.id {
		return true
	}
	if p.keys == nil {
		return false
	}
	ks := p.keys.keys.Load()
	return ks != nil && ks.has(id)
}

func (p *provider) close() {
	if p.url != nil {
		p.url.close()
	}
	if p.discovery != nil {
		p.discovery.close()
	}
}

// verified is what a successful verification yields.
type verified struct {
	provider *provider
	keyID    string
	alg      string // the header's alg, as verified
	kid      string
	claims   map[string]any
	payload  []byte
	exp      time.Time
	sub      string
	sid      string
	jti      string
	cnf      confirmation // what the token is bound to (cnf claim)
}

// jwsHeader holds the protected-header fields we act on. jku, x5u, jwk and
// x5c are deliberately not read: keys named inside a token are never used.
type jwsHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Typ  string   `json:"typ"`
	Crit []string `json:"crit"`
}

// verifier picks the provider by the token's iss and checks the signature
// and the registered claims.
type verifier struct {
	byIssuer map[string]*provider
	clock    func() time.Time
	// rolesPath is authorization.roles_claim: what allowed_roles limits.
	rolesPath []string
}

// verify returns the verified token, or a denial, or an *errUnavailable
// when the provider has never loaded keys. The token's spelling has been
// checked (splitToken); the canonical spelling is what is verified.
// audiences, when not nil, replace the provider's (an app's audiences).
func (v *verifier) verify(ctx context.Context, ct *compactToken, audiences []string) (*verified, error) {
	claims, strict, err := parseClaims(ct.payload)
	if err != nil {
		return nil, deny(ReasonInvalidToken, "the token payload is not a JSON object")
	}
	iss, _ := claims["iss"].(string)
	prov := v.byIssuer[iss]
	if prov == nil {
		return nil, deny(ReasonInvalidToken, "the issuer is not accepted")
	}
	hdr := &ct.header
	if err := prov.checkHeader(hdr); err != nil {
		return nil, err
	}
	key, err := prov.verifySignature(ctx, ct, hdr)
	if err != nil {
		return nil, err
	}
	// After the signature: only a token its issuer signed pays for the
	// strict walk (a flood of forged tokens stops at the signature).
	if strict != nil {
		return nil, deny(ReasonInvalidToken, "the token payload is not one JSON object with unique keys")
	}
	out := &verified{provider: prov, keyID: key.id, alg: hdr.Alg, kid: hdr.Kid, claims: claims, payload: ct.payload}
	if audiences == nil {
		audiences = prov.audiences
	}
	if d := prov.checkClaims(claims, v.clock(), audiences, out); d != nil {
		return nil, d
	}
	if d := prov.checkAssertions(claims, v.rolesPath); d != nil {
		return nil, d
	}
	out.sub, _ = claims["sub"].(string)
	out.sid, _ = claims["sid"].(string)
	out.jti, _ = claims["jti"].(string)
	cnf, d := readConfirmation(claims)
	if d != nil {
		return nil, d
	}
	out.cnf = cnf
	return out, nil
}

// parseClaims decodes the payload as decodeClaims does, in the same pass
// finding what jsonscan.CheckObject refuses (strict), to be acted on after
// the signature.
func parseClaims(payload []byte) (claims map[string]any, strict, err error) {
	if !utf8.Valid(payload) {
		// encoding/json decodes invalid UTF-8 (as U+FFFD); such a payload
		// is refused after the signature, so its decoding is not worth a
		// fast path.
		claims, err = decodeClaims(payload)
		return claims, jsonscan.ErrNotUTF8, err
	}
	return jsonscan.ParseObject(payload, true)
}

// decodeClaims decodes the payload keeping numbers exact (json.Number).
func decodeClaims(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	if claims == nil || dec.More() {
		return nil, fmt.Errorf("not a single JSON object")
	}
	return claims, nil
}

func (p *provider) checkHeader(h *jwsHeader) error {
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") {
		return deny(ReasonInvalidToken, "unsigned tokens are refused")
	}
	if _, ok := p.algs[h.Alg]; !ok || (p.keys != nil && !p.keys.algAllowed(h.Alg)) {
		return deny(ReasonInvalidToken, "the signing algorithm is not allowed")
	}
	if len(h.Crit) > 0 {
		// We implement no JWS extension, so every crit entry is unknown.
		return deny(ReasonInvalidToken, "the token has an unsupported critical header")
	}
	if p.requireTyp && !isATJWT(h.Typ) {
		return deny(ReasonInvalidToken, "the token is not an access token (typ at+jwt)")
	}
	return nil
}

func isATJWT(typ string) bool {
	t := strings.ToLower(typ)
	return t == "at+jwt" || t == "application/at+jwt"
}

// plausibleKID: printable ASCII, bounded; anything else cannot be one of
// our keys and must not trigger a refetch.
func plausibleKID(kid string) bool {
	if len(kid) > 256 {
		return false
	}
	for i := 0; i < len(kid); i++ {
		if kid[i] < 0x21 || kid[i] > 0x7e {
			return false
		}
	}
	return true
}

// verifySignature finds the key (for an unknown kid, refetching the JWKS
// within the limits of kidRefetcher: UNAVAILABLE while that is pending) and
// checks the signature with it.
func (p *provider) verifySignature(ctx context.Context, ct *compactToken, h *jwsHeader) (*verifyKey, error) {
	alg := p.algs[h.Alg]
	var keys []*verifyKey
	if strings.HasPrefix(h.Alg, "HS") {
		// Only the configured secret: never a JWKS key, so a public key can
		// never be used as an HMAC secret.
		if p.hmac != nil {
			keys = []*verifyKey{p.hmac}
		}
	} else {
		if p.keys == nil {
			return nil, deny(ReasonInvalidToken, "no key matches the token")
		}
		ks := p.keys.keys.Load()
		if ks == nil {
			return nil, &errUnavailable{provider: p.name}
		}
		var found bool
		keys, found = ks.candidates(h.Kid, h.Alg)
		if !found && h.Kid != "" && plausibleKID(h.Kid) {
			switch p.keys.awaitKID(ctx, h.Kid) {
			case kidFound:
				keys, _ = p.keys.keys.Load().candidates(h.Kid, h.Alg)
			case kidPending:
				return nil, &errUnavailable{provider: p.name, kidPending: true}
			}
		}
	}
	if len(keys) == 0 {
		return nil, deny(ReasonInvalidToken, "no key matches the token")
	}
	for _, k := range keys {
		if verifyWith(k, alg, h.Alg, ct) {
			return k, nil
		}
	}
	return nil, deny(ReasonInvalidToken, "the signature is invalid")
}

// verifyWith checks ct's signature with k for alg (allowed for the
// provider and usable with k: checked by the caller). ECDSA, RSA and EdDSA
// go straight to the standard library on the bytes splitToken decoded, each
// only with a key of its own type and, for ECDSA, the alg's curve; HMAC
// goes through jwx.
func verifyWith(k *verifyKey, alg jwa.SignatureAlgorithm, name string, ct *compactToken) bool {
	switch name {
	case "ES256", "ES384", "ES512":
		pub, ok := k.raw.(*ecdsa.PublicKey)
		c := ecdsaCurveOf(name)
		if !ok || pub.Curve.Params().Name != c.curve.Params().Name || len(ct.sig) != 2*len(c.n) {
			return false
		}
		d := signingDigest(c.hash, ct.signingInput)
		r := new(big.Int).SetBytes(ct.sig[:len(c.n)])
		s := new(big.Int).SetBytes(ct.sig[len(c.n):])
		return ecdsa.Verify(pub, d, r, s)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		pub, ok := k.raw.(*rsa.PublicKey)
		if !ok {
			return false
		}
		h := rsaHashes[name[2:]]
		d := signingDigest(h, ct.signingInput)
		if name[0] == 'P' {
			return rsa.VerifyPSS(pub, h, d, ct.sig, &rsa.PSSOptions{Hash: h, SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(pub, h, d, ct.sig) == nil
	case "EdDSA":
		pub, ok := k.raw.(ed25519.PublicKey)
		if !ok || len(pub) != ed25519.PublicKeySize {
			return false
		}
		return ed25519.Verify(pub, []byte(ct.signingInput), ct.sig)
	}
	_, err := jws.VerifyCompactFast(k.raw, []byte(ct.canonical), alg)
	return err == nil
}

var rsaHashes = map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}

// signingDigest hashes the signing input with h (SHA-256, -384 or -512).
func signingDigest(h crypto.Hash, input string) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256([]byte(input))
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384([]byte(input))
		return d[:]
	}
	d := sha512.Sum512([]byte(input))
	return d[:]
}

// checkClaims checks iss (already matched), aud, exp, nbf, iat and the
// optional maximum lifetime, with leeway, and sets out.exp.
func (p *provider) checkClaims(c map[string]any, now time.Time, audiences []string, out *verified) *denial {
	if !audienceOK(c["aud"], audiences) {
		return deny(ReasonInvalidToken, "the audience is not accepted")
	}
	// No identity without a subject: checked before exp, so a token that
	// could never be valid is not answered token_expired (refresh).
	if sub, ok := c["sub"].(string); !ok || sub == "" {
		return deny(ReasonInvalidToken, "the token has no subject (sub)")
	}
	exp, ok, valid := numericDate(c, "exp")
	if !ok || !valid {
		return deny(ReasonInvalidToken, "the token has no valid exp")
	}
	out.exp = exp
	if !now.Before(exp.Add(p.leeway)) {
		return deny(ReasonTokenExpired, "the token has expired")
	}
	if nbf, ok, valid := numericDate(c, "nbf"); ok {
		if !valid || now.Add(p.leeway).Before(nbf) {
			return deny(ReasonInvalidToken, "the token is not valid yet")
		}
	}
	iat, hasIAT, valid := numericDate(c, "iat")
	if hasIAT && (!valid || now.Add(p.leeway).Before(iat)) {
		return deny(ReasonInvalidToken, "the token was issued in the future")
	}
	if p.maxLifetime > 0 {
		if !hasIAT {
			return deny(ReasonInvalidToken, "the token has no iat")
		}
		if exp.Sub(iat) > p.maxLifetime {
			return deny(ReasonInvalidToken, "the token lives longer than allowed")
		}
	}
	return nil
}

// checkAssertions applies the provider's limits on what it may assert:
// subject_prefix on sub, allowed_roles on the roles claim. A token beyond
// them is refused whole (not trimmed), so the roles header, the payload
// header and the authorisation all see the same token or none.
func (p *provider) checkAssertions(c map[string]any, rolesPath []string) *denial {
	if p.subjectPrefix != "" {
		sub, _ := c["sub"].(string)
		if len(sub) <= len(p.subjectPrefix) || !strings.HasPrefix(sub, p.subjectPrefix) {
			return deny(ReasonInvalidToken, "the subject is not one this issuer may assert")
		}
	}
	if p.allowedRoles == nil {
		return nil
	}
	v, ok := lookupClaim(c, rolesPath)
	if !ok {
		return nil
	}
	var roles []string
	switch t := v.(type) {
	case string:
		roles = stringList(t)
	case []any:
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return deny(ReasonInvalidToken, "the roles claim holds a non-string")
			}
			roles = append(roles, s)
		}
	default:
		return deny(ReasonInvalidToken, "the roles claim is neither a string nor an array")
	}
	for _, r := range roles {
		if !p.allowedRoles[r] {
			return deny(ReasonInvalidToken, "the token holds a role this issuer may not assert")
		}
	}
	return nil
}

func audienceOK(aud any, audiences []string) bool {
	switch a := aud.(type) {
	case string:
		return contains(audiences, a)
	case []any:
		for _, v := range a {
			if s, ok := v.(string); ok && contains(audiences, s) {
				return true
			}
		}
	}
	return false
}

// numericDate reads an RFC 7519 NumericDate: present reports whether the
// claim exists, valid whether it is a finite number.
func numericDate(c map[string]any, name string) (t time.Time, present, valid bool) {
	v, ok := c[name]
	if !ok {
		return time.Time{}, false, false
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, true, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return time.Time{}, true, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}
