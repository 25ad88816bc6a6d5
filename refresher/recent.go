package refresher

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/tokengate/tokengate/refresher/store"
)

// refreshPrefix versions the refresh-token format, so a later format can be
// told apart (and old tokens rejected cheaply without a store lookup).
const refreshPrefix = "tgr1_"

// refreshBytes is the random part of a refresh token: 256 bits.
const refreshBytes = 32

// newRefreshToken returns a fresh opaque refresh token and its hash.
func newRefreshToken() (token, hash string) {
	b := make([]byte, refreshBytes)
	rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	token = refreshPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

// hashToken is what the store keys a refresh token by: hex SHA-256 of the
// whole string. The token itself is never stored.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// wellFormed reports whether s looks like one of our refresh tokens.
func wellFormed(s string) bool {
	rest, ok := strings.CutPrefix(s, refreshPrefix)
	if !ok || len(rest) != base64.RawURLEncoding.EncodedLen(refreshBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// newID returns a random URL-safe identifier (sid, jti) of 128 bits.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// issuedPair is what one rotation (or sign-in) issued. It is what gets
// sealed, so its JSON names are short and stable across replicas.
type issuedPair struct {
	AccessToken      string    `json:"at"`
	AccessExpiresAt  time.Time `json:"ate"`
	RefreshToken     string    `json:"rt"`
	RefreshExpiresAt time.Time `json:"rte"`
	SessionID        string    `json:"sid"`
	JTI              string    `json:"jti"`
	// JKT is the access token's cnf.jkt ("" for Bearer), so a replay
	// answers with the same token_type.
	JKT string `json:"jkt,omitempty"`
}

const sealInfo = "tokengate sealed pair v1"

// sealKey derives the AES-256 key for the pair a parent token rotated into.
// Only a holder of the parent token can derive it, so a memory or store dump
// yields no usable token.
func sealKey(parentToken string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(parentToken), nil, sealInfo, 32)
}

// seal encrypts p with AES-GCM under a key derived from parentToken; the
// parent's hash is the additional data, binding the ciphertext to its slot.
// Layout: nonce ‖ ciphertext.
func seal(parentToken, parentHash string, p issuedPair) ([]byte, error) {
	gcm, err := pairCipher(parentToken)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode pair: %w", err)
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	rand.Read(nonce)
	return gcm.Seal(nonce, nonce, plain, []byte(parentHash)), nil
}

// unseal reverses seal.
func unseal(parentToken, parentHash string, sealed []byte) (issuedPair, error) {
	var p issuedPair
	gcm, err := pairCipher(parentToken)
	if err != nil {
		return p, err
	}
	if len(sealed) < gcm.NonceSize()+gcm.Overhead() {
		return p, errors.New("sealed pair too short")
	}
	n := gcm.NonceSize()
	plain, err := gcm.Open(nil, sealed[:n], sealed[n:], []byte(parentHash))
	if err != nil {
		return p, fmt.Errorf("open sealed pair: %w", err)
	}
	if err := json.Unmarshal(plain, &p); err != nil {
		return p, fmt.Errorf("decode sealed pair: %w", err)
	}
	return p, nil
}

func pairCipher(parentToken string) (cipher.AEAD, error) {
	key, err := sealKey(parentToken)
	if err != nil {
		return nil, fmt.Errorf("derive seal key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// recentEntry is one recently rotated parent: the sealed pair it rotated
// into, and what the replay rule needs to be checked against the session
// (its sid and generation). The sid and child hash are kept in clear
// (neither is a secret) so a revocation can drop a session's entries.
type recentEntry struct {
	sid        string
	generation uint64 // the parent's generation; its child is generation+1
	childHash  string
	rotatedAt  time.Time
	sealed     []byte
}

// token is the parent's record as far as the entry knows it: rotated at
// rotatedAt into childHash. A rotated record never changes again, so this is
// what the store holds; the session is what may have moved on.
func (e recentEntry) token() store.Token {
	return store.Token{SessionID: e.sid, Generation: e.generation, RotatedAt: e.rotatedAt, ChildHash: e.childHash}
}

// recent is the in-process LRU of recently issued pairs, keyed by the
// SHA-256 of the presented (parent) refresh token. A hit saves the token
// read, the signature and the store's write; it never decides a replay on
// its own: another replica may have rotated the child or revoked the
// session since, and only the store knows (Issuer.replayRecent).
//
// expirable.NewLRU starts a cleanup goroutine that never stops (golang-lru
// v2.0.7 has no Close); a recent is therefore made once per Issuer, and an
// Issuer lives as long as its process. Entries also carry rotatedAt and are
// checked against the issuer's clock, so the LRU's own wall-clock expiry is
// only memory hygiene, never the decision.
type recent struct {
	lru   *expirable.LRU[string, recentEntry]
	grace time.Duration
}

func newRecent(size int, grace time.Duration) *recent {
	return &recent{lru: expirable.NewLRU[string, recentEntry](size, nil, grace), grace: grace}
}

// lookup returns the entry of parentHash if it was rotated less than grace
// before now. The caller asks the store whether it may still be replayed.
func (r *recent) lookup(parentHash string, now time.Time) (recentEntry, bool) {
	e, ok := r.lru.Peek(parentHash)
	if !ok || !now.Before(e.rotatedAt.Add(r.grace)) {
		return recentEntry{}, false
	}
	return e, true
}

func (r *recent) add(parentHash string, e recentEntry) { r.lru.Add(parentHash, e) }

func (r *recent) remove(parentHash string) { r.lru.Remove(parentHash) }

// forgetSession drops every entry of a revoked session, so this replica
// stops looking them up at once. O(size), and revocations are rare.
func (r *recent) forgetSession(sid string) {
	for _, k := range r.lru.Keys() {
		if e, ok := r.lru.Peek(k); ok && e.sid == sid {
			r.lru.Remove(k)
		}
	}
}
