package dpop_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/dpop"
	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/fakeclock"
)

// fixedKeys are derived from constant seeds, so a crasher found by the
// fuzzer reproduces with the same keys.
func fixedKeys(t testing.TB) []*dpoptest.Key {
	t.Helper()
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed)
	if err != nil {
		t.Fatal(err)
	}
	return []*dpoptest.Key{
		dpoptest.FromSigner(t, "ES256", ec),
		dpoptest.FromSigner(t, "EdDSA", ed25519.NewKeyFromSeed(seed)),
	}
}

// FuzzVerify: Verify never panics, its error is always a *dpop.Error, and
// whatever it accepts is a well-formed proof by encoding/json's reading
// too (objects, typ dpop+jwt, an allowlisted alg) that is refused when
// presented again.
func FuzzVerify(f *testing.F) {
	keys := fixedKeys(f)
	at := dpoptest.WithIAT(fakeclock.Start)
	for _, k := range keys {
		f.Add(k.Proof(testMethod, testURL, at, dpoptest.WithJTI("seed")))
		f.Add(k.Proof(testMethod, testURL, at, dpoptest.WithATH(testToken)))
		f.Add(k.Proof(testMethod, "https://API.example.com:443/v1/%7Ethings/../things?x#y", at))
		f.Add(k.Proof(testMethod, testURL, at, dpoptest.Edit(func(s *dpoptest.Spec) { s.Header["alg"] = "none" })))
		f.Add(k.SignRaw([]byte(`{"typ":"dpop+jwt","alg":"`+k.Alg()+`","jwk":{"kty":"EC","kty":"EC"}}`), []byte(`{"jti":"a","jti":"b"}`)))
	}
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, proof string) {
		clock := fakeclock.New()
		v, err := dpop.NewVerifier(dpop.Options{Replay: dpop.NewReplayCache(0), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []dpop.Request{
			{Method: testMethod, URL: testURL},
			{Method: testMethod, URL: testURL, AccessToken: testToken, JKT: keys[0].JKT()},
		} {
			p, err := v.Verify(proof, req)
			if err != nil {
				if _, ok := err.(*dpop.Error); !ok {
					t.Fatalf("error %T is not *dpop.Error", err)
				}
				continue
			}
			parts := strings.Split(proof, ".")
			if len(parts) != 3 {
				t.Fatalf("accepted %d segments", len(parts))
			}
			var h struct {
				Typ string          `json:"typ"`
				Alg string          `json:"alg"`
				JWK json.RawMessage `json:"jwk"`
			}
			var c map[string]any
			hb, err1 := base64.RawURLEncoding.Strict().DecodeString(parts[0])
			cb, err2 := base64.RawURLEncoding.Strict().DecodeString(parts[1])
			if err1 != nil || err2 != nil || json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
				t.Fatalf("accepted a proof encoding/json cannot read: %q", proof)
			}
			if h.Typ != "dpop+jwt" || !strings.Contains(strings.Join(dpop.DefaultAlgorithms, " "), h.Alg) || p.JKT == "" {
				t.Fatalf("accepted header %+v", h)
			}
			if _, err := v.Verify(proof, req); err == nil {
				t.Fatalf("accepted a replay of %q", proof)
			}
		}
	})
}
