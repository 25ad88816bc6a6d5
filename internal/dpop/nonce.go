package dpop

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"
)

// Nonces issues and checks stateless server nonces (RFC 9449 §8): an
// issue time and an HMAC over it under a secret. Replicas that share the
// secret accept each other's nonces.
//
// A nonce is base64url (no padding) of 24 bytes: the issue time in Unix
// seconds (8 bytes, big-endian) followed by the first 16 bytes of
// HMAC-SHA256(secret, those 8 bytes). It is valid from its issue time
// (5 seconds earlier allowed, for replicas whose clocks differ) until
// lifetime after it.
type Nonces struct {
	secret   []byte
	lifetime time.Duration
}

const (
	nonceTimeBytes = 8
	nonceMACBytes  = 16
	nonceLen       = (nonceTimeBytes + nonceMACBytes) * 4 / 3 // 32 characters
	// nonceSkew is how far in the future a nonce's issue time may be.
	nonceSkew = 5 * time.Second
	// DefaultNonceLifetime is the lifetime NewNonces takes for ≤ 0.
	DefaultNonceLifetime = 5 * time.Minute
)

// NewNonces returns a nonce source. secret nil or empty: a random one (fine
// for one replica; replicas must share a secret, or a client would be sent
// back and forth between them). lifetime ≤ 0: 5 minutes.
func NewNonces(secret []byte, lifetime time.Duration) (*Nonces, error) {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
	} else {
		secret = append([]byte(nil), secret...)
	}
	if lifetime <= 0 {
		lifetime = DefaultNonceLifetime
	}
	return &Nonces{secret: secret, lifetime: lifetime}, nil
}

// Lifetime is how long an issued nonce stays valid.
func (n *Nonces) Lifetime() time.Duration { return n.lifetime }

func (n *Nonces) mac(t []byte) [sha256.Size]byte {
	h := hmac.New(sha256.New, n.secret)
	h.Write(t)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Issue returns a fresh nonce (the DPoP-Nonce header value).
func (n *Nonces) Issue(now time.Time) string {
	var raw [nonceTimeBytes + nonceMACBytes]byte
	binary.BigEndian.PutUint64(raw[:nonceTimeBytes], uint64(now.Unix()))
	sum := n.mac(raw[:nonceTimeBytes])
	copy(raw[nonceTimeBytes:], sum[:nonceMACBytes])
	return strictB64.EncodeToString(raw[:])
}

var (
	errNonceInvalid = errors.New("nonce is not valid")
	errNonceExpired = errors.New("nonce expired")
)

// Check reports whether nonce is one of ours and still valid at now; stale
// when it is past half its lifetime (time to send a fresh one).
func (n *Nonces) Check(nonce string, now time.Time) (stale bool, err error) {
	if len(nonce) != nonceLen || !isB64URL(nonce) {
		return false, errNonceInvalid
	}
	var raw [nonceTimeBytes + nonceMACBytes + 2]byte
	m, err := strictB64.Decode(raw[:], []byte(nonce))
	if err != nil || m != nonceTimeBytes+nonceMACBytes {
		return false, errNonceInvalid
	}
	sum := n.mac(raw[:nonceTimeBytes])
	if !hmac.Equal(sum[:nonceMACBytes], raw[nonceTimeBytes:nonceTimeBytes+nonceMACBytes]) {
		return false, errNonceInvalid
	}
	issued := int64(binary.BigEndian.Uint64(raw[:nonceTimeBytes]))
	age := now.Unix() - issued
	if age < -int64(nonceSkew/time.Second) || age > int64(n.lifetime/time.Second) {
		return false, errNonceExpired
	}
	return age > int64(n.lifetime/time.Second)/2, nil
}
