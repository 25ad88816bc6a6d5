package extauthz

import (
	"crypto"
	"testing"
	"time"
)

// TestVerifyWithKeyTypes: the signature check on the decoded bytes takes
// a key only of the algorithm's own type (and, for ECDSA, curve), whatever
// key the JWKS bound to the alg, and only the signature over the exact
// signing input.
func TestVerifyWithKeyTypes(t *testing.T) {
	algs := []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"}
	keys := map[string]*testKey{}
	for _, alg := range algs {
		keys[alg] = newTestKey(t, alg, "verifywith")
	}
	for _, alg := range algs {
		ct, d := splitToken(keys[alg].token(t, claimsAt(time.Unix(1700000000, 0))))
		if d != nil {
			t.Fatalf("%s: %v", alg, d)
		}
		for _, other := range algs {
			vk := &verifyKey{id: "k", alg: alg, raw: keys[other].priv.(crypto.Signer).Public()}
			if got, want := verifyWith(vk, supportedAlgs[alg], alg, ct), other == alg; got != want {
				t.Errorf("%s token, %s key: verified %v, want %v", alg, other, got, want)
			}
		}
		vk := &verifyKey{id: "k", alg: alg, raw: keys[alg].priv.(crypto.Signer).Public()}
		tampered := *ct
		tampered.signingInput = ct.signingInput[:len(ct.signingInput)-1] + "A"
		if ct.signingInput[len(ct.signingInput)-1] == 'A' {
			tampered.signingInput = ct.signingInput[:len(ct.signingInput)-1] + "B"
		}
		if verifyWith(vk, supportedAlgs[alg], alg, &tampered) {
			t.Errorf("%s: a changed signing input verified", alg)
		}
		sig := append([]byte(nil), ct.sig...)
		sig[len(sig)-1] ^= 1
		tampered = *ct
		tampered.sig = sig
		if verifyWith(vk, supportedAlgs[alg], alg, &tampered) {
			t.Errorf("%s: a changed signature verified", alg)
		}
	}
}
