package refresher

import (
	"encoding/json"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tokengate/tokengate/refresher/store"
)

// maxSnapshotClaims is the largest claims object a snapshot keeps; a
// session with larger claims rotates the ordinary way (read, mint, rotate).
// With it, the snapshots of one replica take at most about
// Config.RecentSize × (maxSnapshotClaims + 300) bytes (≈ 13 MiB at the
// default 10 000 entries), and typically a few MiB.
const maxSnapshotClaims = 1024

// snapshots is the in-process LRU of the sessions of the refresh tokens
// this replica issued (at sign-in or rotation), keyed by the token's
// SHA-256: what the token's rotation mints the next access token from
// without reading the session first. It is never the decision: the store
// checks, in the same step as the rotation (store.SnapshotRotator), that
// the session is still at the snapshot's generation with the same claims,
// and decides replay, reuse, revocation, expiry and the DPoP key as
// always; if the snapshot is stale the issuer rotates the ordinary way.
// Bounded by Config.RecentSize entries; kept only for a backend with
// store.SnapshotRotator (Redis).
type snapshots struct {
	lru *lru.Cache[string, snapshot]
}

// snapshot is what a mint needs of a session, as it was when the token
// keyed by it was issued. It holds no token.
type snapshot struct {
	sid        string
	subject    string
	claims     json.RawMessage
	createdAt  time.Time
	idleTTL    time.Duration
	expiresAt  time.Time
	jkt        string
	device     string
	generation uint64 // the session's, = the issued token's generation
}

func newSnapshots(size int) *snapshots {
	c, err := lru.New[string, snapshot](size)
	if err != nil {
		// Only a non-positive size, which Config.Validate refuses.
		panic(err)
	}
	return &snapshots{lru: c}
}

// add remembers sess (as it is once the token with hash was issued) for
// the token's rotation. A nil snapshots (a backend without the fast path)
// keeps nothing.
func (s *snapshots) add(hash string, sess store.Session) {
	if s == nil || len(sess.Claims) > maxSnapshotClaims {
		return
	}
	s.lru.Add(hash, snapshot{sid: sess.ID, subject: sess.Subject, claims: sess.Claims, createdAt: sess.CreatedAt, idleTTL: sess.IdleTTL,
		expiresAt: sess.ExpiresAt, jkt: sess.JKT, device: sess.Device, generation: sess.Generation})
}

// peek returns the snapshot for a token hash without using it up.
func (s *snapshots) peek(hash string) (snapshot, bool) {
	if s == nil {
		return snapshot{}, false
	}
	return s.lru.Peek(hash)
}

func (s *snapshots) remove(hash string) {
	if s != nil {
		s.lru.Remove(hash)
	}
}

// forgetSession drops the entries of a revoked session. O(size), and
// revocations are rare.
func (s *snapshots) forgetSession(sid string) {
	if s == nil {
		return
	}
	for _, k := range s.lru.Keys() {
		if e, ok := s.lru.Peek(k); ok && e.sid == sid {
			s.lru.Remove(k)
		}
	}
}

// session is the snapshot as a store.Session, to mint from.
func (e snapshot) session() store.Session {
	return store.Session{ID: e.sid, Subject: e.subject, Claims: e.claims, CreatedAt: e.createdAt, IdleTTL: e.idleTTL,
		ExpiresAt: e.expiresAt, JKT: e.jkt, Device: e.device, Generation: e.generation}
}
