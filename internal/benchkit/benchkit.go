// Package benchkit holds what the signature benchmarks of extauthz and
// internal/dpop share (docs/benchmarks.md reports them): the process's CPU
// time per operation, and the raw signature verification their overhead is
// measured against.
package benchkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"
	"time"
)

// CPUMeter reports a benchmark's CPU time per operation as cpu-ns/op: the
// process's CPU time (user and system, every goroutine, the garbage
// collector's too). Unlike ns/op (wall time) it does not count time the
// benchmark waited for a core on a shared machine, and it does count the
// garbage collector's work on other cores.
type CPUMeter struct {
	start time.Duration
	ok    bool
}

// StartCPU starts measuring (after b.ResetTimer).
func StartCPU() CPUMeter {
	d, ok := ProcessCPU()
	return CPUMeter{d, ok}
}

// Report adds cpu-ns/op to b's results, the CPU time since StartCPU over
// b.N; nothing where the CPU time is not measured.
func (m CPUMeter) Report(b *testing.B) {
	if d, ok := ProcessCPU(); ok && m.ok && b.N > 0 {
		b.ReportMetric(float64(d-m.start)/float64(b.N), "cpu-ns/op")
	}
}

// RawVerify verifies an ES256, RS256 or EdDSA signature of input with
// nothing but the standard library, the public key in hand: crypto/ecdsa's
// Verify with SHA-256 and r, s the halves of the signature,
// rsa.VerifyPKCS1v15 with SHA-256, ed25519.Verify.
func RawVerify(pub crypto.PublicKey, input, sig []byte) bool {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(input)
		n := len(sig) / 2
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		return ecdsa.Verify(pub, h[:], r, s)
	case *rsa.PublicKey:
		h := sha256.Sum256(input)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(pub, input, sig)
	}
	return false
}
