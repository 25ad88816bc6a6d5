package dpop_test

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/benchkit"
	"github.com/tokengate/tokengate/internal/dpop"
	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/fakeclock"
)

// benchProofs are 512 distinct proofs (they differ in jti) by one key, as
// extauthz sees them: with ath, checked against the token's jkt.
const benchProofs = 512

func benchSetup(b *testing.B, alg string) (*dpoptest.Key, []string, dpop.Request) {
	b.Helper()
	k := dpoptest.NewKey(b, alg)
	proofs := make([]string, benchProofs)
	for i := range proofs {
		proofs[i] = k.Proof(testMethod, testURL, dpoptest.WithIAT(fakeclock.Start), dpoptest.WithATH(testToken), dpoptest.WithJTI("jti-"+strconv.Itoa(i)))
	}
	return k, proofs, dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken, JKT: k.JKT()}
}

// benchVerify runs Verify over the proofs with a replay cache; each round
// over the 512 starts with an empty cache (outside the timer), so every
// Verify is a first sighting that is recorded.
func benchVerify(b *testing.B, alg string) {
	_, proofs, req := benchSetup(b, alg)
	clock := fakeclock.New()
	newV := func() *dpop.Verifier {
		v, err := dpop.NewVerifier(dpop.Options{Replay: dpop.NewReplayCache(0), Now: clock.Now})
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	v := newV()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := benchkit.StartCPU()
	defer cpu.Report(b)
	for i := 0; i < b.N; i++ {
		if i%benchProofs == 0 && i > 0 {
			b.StopTimer()
			v = newV()
			b.StartTimer()
		}
		if _, err := v.Verify(proofs[i%benchProofs], req); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRaw verifies the same proofs' signatures with nothing but the
// standard library, the public key in hand and the signatures decoded
// beforehand: the floor Verify is measured against.
func benchRaw(b *testing.B, alg string) {
	k, proofs, _ := benchSetup(b, alg)
	inputs := make([][]byte, len(proofs))
	sigs := make([][]byte, len(proofs))
	for i, p := range proofs {
		j := strings.LastIndexByte(p, '.')
		inputs[i] = []byte(p[:j])
		var err error
		if sigs[i], err = base64.RawURLEncoding.DecodeString(p[j+1:]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := benchkit.StartCPU()
	defer cpu.Report(b)
	for i := 0; i < b.N; i++ {
		if !benchkit.RawVerify(k.Public(), inputs[i%benchProofs], sigs[i%benchProofs]) {
			b.Fatal("signature does not verify")
		}
	}
}

func BenchmarkVerifyES256(b *testing.B) { benchVerify(b, "ES256") }
func BenchmarkVerifyRS256(b *testing.B) { benchVerify(b, "RS256") }
func BenchmarkVerifyEdDSA(b *testing.B) { benchVerify(b, "EdDSA") }
func BenchmarkRawES256(b *testing.B)    { benchRaw(b, "ES256") }
func BenchmarkRawRS256(b *testing.B)    { benchRaw(b, "RS256") }
func BenchmarkRawEdDSA(b *testing.B)    { benchRaw(b, "EdDSA") }
