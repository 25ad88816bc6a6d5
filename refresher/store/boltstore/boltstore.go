// Package boltstore is the embedded Store: one bbolt file on local disk, the
// default for a single refresher. Sessions, tokens and the revocation feed
// survive restarts. bbolt locks the file, so only one process can open it;
// every decision runs inside one read-write transaction, which makes Rotate
// and the revocations atomic. Concurrent rotations share a transaction (a
// group commit, group.go), so they share its fsync.
//
// The file stays bounded: a sealed pair lives in its own bucket, keyed by the
// end of its grace window, and is deleted at the session's next rotation or
// by Prune once the window has passed; sessions are indexed by their absolute
// expiry, and Prune deletes an expired session with its whole token chain
// (first token → child → …). bbolt never shrinks its file, but it reuses the
// freed pages, so under a steady load the file size reaches a plateau.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tokengate/tokengate/refresher/store"
)

var (
	_ store.Store  = (*Store)(nil)
	_ store.Pruner = (*Store)(nil)
)

var (
	bucketSessions = []byte("sessions") // sid → sessionRecord
	bucketTokens   = []byte("tokens")   // token hash → tokenRecord
	bucketSubjects = []byte("subjects") // sub \x00 sid → empty (index for RevokeSubject)
	bucketFeed     = []byte("feed")     // big-endian seq → feedRecord
	// bucketSealed holds each rotation's sealed pair for the grace window:
	// timeKey(sealed until) ‖ parent hash → sealed pair. Ordered by the end of
	// the window, so Prune deletes the expired ones from the front.
	bucketSealed = []byte("sealed")
	// bucketExpiry indexes sessions by absolute expiry: timeKey(expires) ‖ sid
	// → empty. Prune walks it from the front.
	bucketExpiry = []byte("expiry")
	// bucketMeta holds the file format version and the readiness probe.
	bucketMeta = []byte("meta")

	allBuckets = [][]byte{bucketSessions, bucketTokens, bucketSubjects, bucketFeed, bucketSealed, bucketExpiry, bucketMeta}
)

// On-disk records carry their own JSON names so the file format does not
// change when the Go structs do.
type sessionRecord struct {
	ID         string          `json:"id"`
	Subject    string          `json:"sub"`
	Claims     json.RawMessage `json:"claims,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	IdleTTL    time.Duration   `json:"idle_ttl"`
	ExpiresAt  time.Time       `json:"expires_at"`
	RevokedAt  time.Time       `json:"revoked_at"`
	Generation uint64          `json:"generation"`
	// JKT and Device are absent from records written before DPoP binding
	// existed; such a session loads unbound and without a device.
	JKT    string `json:"jkt,omitempty"`
	Device string `json:"dev,omitempty"`
	// First is the hash of the session's first token: the head of its token
	// chain, which Prune walks to delete every token of an expired session.
	First string `json:"first,omitempty"`
	// SealedKey is the bucketSealed key of the session's live sealed pair
	// (the rotation into the current token), deleted at the next rotation.
	SealedKey []byte `json:"sealed_key,omitempty"`
}

type tokenRecord struct {
	Hash       string    `json:"hash"`
	SessionID  string    `json:"sid"`
	Generation uint64    `json:"generation"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	RotatedAt  time.Time `json:"rotated_at"`
	ChildHash  string    `json:"child,omitempty"`
	// Sealed is read only from files of format 1, where the sealed pair
	// stayed in the token record for the session's whole life; Open moves
	// it to bucketSealed.
	Sealed      []byte    `json:"sealed,omitempty"`
	SealedUntil time.Time `json:"sealed_until"`
}

type feedRecord struct {
	SessionID string    `json:"sid"`
	Subject   string    `json:"sub"`
	Until     time.Time `json:"until"`
}

func fromSession(s store.Session) sessionRecord {
	return sessionRecord{ID: s.ID, Subject: s.Subject, Claims: s.Claims, CreatedAt: s.CreatedAt, IdleTTL: s.IdleTTL,
		ExpiresAt: s.ExpiresAt, RevokedAt: s.RevokedAt, Generation: s.Generation, JKT: s.JKT, Device: s.Device}
}

// setSession takes the session's fields from s, keeping the record's own
// (the chain head and the live sealed pair's key).
func (r *sessionRecord) setSession(s store.Session) {
	first, sealed := r.First, r.SealedKey
	*r = fromSession(s)
	r.First, r.SealedKey = first, sealed
}

func (r sessionRecord) session() store.Session {
	return store.Session{ID: r.ID, Subject: r.Subject, Claims: r.Claims, CreatedAt: r.CreatedAt, IdleTTL: r.IdleTTL,
		ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, Generation: r.Generation, JKT: r.JKT, Device: r.Device}
}

// timeKey encodes t as 8 big-endian bytes that sort in time order (Unix
// nanoseconds with the sign bit flipped).
func timeKey(t time.Time) []byte {
	k := make([]byte, 8, 8+64)
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano())^(1<<63))
	return k
}

// keyTime decodes the time prefix of a timeKey-prefixed key.
func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])^(1<<63)))
}

func sealedKey(until time.Time, parentHash string) []byte {
	return append(timeKey(until), parentHash...)
}

func expiryKey(expires time.Time, sid string) []byte {
	return append(timeKey(expires), sid...)
}

func fromToken(t store.Token) tokenRecord {
	return tokenRecord{Hash: t.Hash, SessionID: t.SessionID, Generation: t.Generation, IssuedAt: t.IssuedAt,
		ExpiresAt: t.ExpiresAt, RotatedAt: t.RotatedAt, ChildHash: t.ChildHash}
}

func (r tokenRecord) token() store.Token {
	return store.Token{Hash: r.Hash, SessionID: r.SessionID, Generation: r.Generation, IssuedAt: r.IssuedAt,
		ExpiresAt: r.ExpiresAt, RotatedAt: r.RotatedAt, ChildHash: r.ChildHash}
}

// Store is a bbolt-backed store.Store.
type Store struct {
	db *bolt.DB

	// health remembers whether the last write transaction committed, for
	// Ping (readiness).
	health writeHealth

	// group lets concurrent rotations share one transaction (group.go);
	// solo turns that off, one transaction per rotation (for the benchmark
	// that compares the two).
	group group
	solo  bool

	mu sync.Mutex
	// changed is closed (and replaced) whenever the feed grows, waking
	// long-polling Revocations calls. bbolt is single-process, so an
	// in-process signal sees every append.
	changed chan struct{}
}

// Open opens (creating if needed) the bolt file at path. It fails after a
// second if another process holds the file, instead of hanging.
func Open(path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open bolt store %s: the file is locked by another process", path)
		}
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrate(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init bolt store %s: %w", path, err)
	}
	return &Store{db: db, changed: make(chan struct{})}, nil
}

func get[T any](b *bolt.Bucket, key string) (T, bool, error) {
	var v T
	data := b.Get([]byte(key))
	if data == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("decode %s record %q: %w", "bolt", key, err)
	}
	return v, true, nil
}

func put(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

func subjectKey(sub, sid string) []byte { return []byte(sub + "\x00" + sid) }

// CreateSession implements store.Store.
func (s *Store) CreateSession(_ context.Context, sess store.Session, first store.Token) error {
	return s.update(func(tx *bolt.Tx) error {
		sessions, tokens := tx.Bucket(bucketSessions), tx.Bucket(bucketTokens)
		if sessions.Get([]byte(sess.ID)) != nil || tokens.Get([]byte(first.Hash)) != nil {
			return store.ErrExists
		}
		first.SessionID = sess.ID
		first.Generation = sess.Generation
		rec := fromSession(sess)
		rec.First = first.Hash
		if err := put(sessions, sess.ID, rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExpiry).Put(expiryKey(sess.ExpiresAt, sess.ID), nil); err != nil {
			return err
		}
		if err := put(tokens, first.Hash, fromToken(first)); err != nil {
			return err
		}
		return tx.Bucket(bucketSubjects).Put(subjectKey(sess.Subject, sess.ID), nil)
	})
}

// GetSession implements store.Store.
func (s *Store) GetSession(_ context.Context, sid string) (store.Session, error) {
	var out store.Session
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := get[sessionRecord](tx.Bucket(bucketSessions), sid)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		out = r.session()
		return nil
	})
	return out, err
}

// GetToken implements store.Store.
func (s *Store) GetToken(_ context.Context, hash string) (store.Token, error) {
	var out store.Token
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := get[tokenRecord](tx.Bucket(bucketTokens), hash)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		out = r.token()
		return nil
	})
	return out, err
}

// Rotate implements store.Store.
func (s *Store) Rotate(_ context.Context, req store.RotateRequest) (store.RotateResult, error) {
	var res store.RotateResult
	appended := false
	// The function may run more than once (group.go): it sets res and
	// appended afresh each time, and they are read only after a commit.
	err := s.batch(func(tx *bolt.Tx) error {
		res, appended = store.RotateResult{}, false
		sessions, tokens := tx.Bucket(bucketSessions), tx.Bucket(bucketTokens)
		parent, ok, err := get[tokenRecord](tokens, req.ParentHash)
		if err != nil {
			return err
		}
		if !ok {
			res.Outcome = store.Unknown
			return nil
		}
		rec, ok, err := get[sessionRecord](sessions, parent.SessionID)
		if err != nil {
			return err
		}
		if !ok {
			res.Outcome = store.Unknown
			return nil
		}
		var w store.Writes
		res, w = store.Apply(parent.token(), rec.session(), req)
		if res.Outcome == store.Replayed && req.Now.Before(parent.SealedUntil) {
			res.Sealed = bytes.Clone(tx.Bucket(bucketSealed).Get(sealedKey(parent.SealedUntil, parent.Hash)))
			if res.Sealed == nil {
				res.Sealed = bytes.Clone(parent.Sealed)
			}
		}
		appended = w.Revocation != nil
		return writeRotation(tx, rec, w)
	})
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return store.RotateResult{}, err
		}
		return store.RotateResult{}, fmt.Errorf("bolt rotate: %w", err)
	}
	if appended {
		s.notify()
	}
	return res, nil
}

// writeRotation persists what a rotation outcome changes (store.Apply), in the
// rotation's transaction; rec is the session's record as read.
func writeRotation(tx *bolt.Tx, rec sessionRecord, w store.Writes) error {
	tokens := tx.Bucket(bucketTokens)
	if w.Child != nil {
		if tokens.Get([]byte(w.Child.Hash)) != nil {
			return store.ErrExists
		}
		if err := put(tokens, w.Child.Hash, fromToken(*w.Child)); err != nil {
			return err
		}
	}
	if w.Session != nil {
		rec.setSession(*w.Session)
		// The session moved on (a newer rotation, or revoked): the pair
		// kept from its previous rotation can never be replayed again.
		if err := dropSealed(tx, &rec); err != nil {
			return err
		}
	}
	if w.Parent != nil {
		parent := fromToken(*w.Parent)
		parent.SealedUntil = w.SealedUntil
		rec.SealedKey = sealedKey(w.SealedUntil, parent.Hash)
		if err := tx.Bucket(bucketSealed).Put(rec.SealedKey, w.Sealed); err != nil {
			return err
		}
		if err := put(tokens, parent.Hash, parent); err != nil {
			return err
		}
	}
	if w.Session != nil || w.Parent != nil { // the record holds SealedKey
		if err := put(tx.Bucket(bucketSessions), rec.ID, rec); err != nil {
			return err
		}
	}
	if w.Revocation != nil {
		return appendFeed(tx, *w.Revocation)
	}
	return nil
}

// PatchClaims implements store.Store.
func (s *Store) PatchClaims(_ context.Context, sid string, claims json.RawMessage, now time.Time) (store.Session, error) {
	var out store.Session
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		rec, ok, err := get[sessionRecord](b, sid)
		if err != nil {
			return err
		}
		if !ok || !rec.session().Active(now) {
			return store.ErrNotFound
		}
		rec.Claims = bytes.Clone(claims)
		out = rec.session()
		return put(b, sid, rec)
	})
	return out, err
}

// RevokeSession implements store.Store.
func (s *Store) RevokeSession(_ context.Context, sid string, now, until time.Time) (bool, error) {
	revoked := false
	err := s.update(func(tx *bolt.Tx) error {
		revoked = false
		b := tx.Bucket(bucketSessions)
		rec, ok, err := get[sessionRecord](b, sid)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		if !rec.RevokedAt.IsZero() {
			return nil
		}
		rec.RevokedAt = now
		if err := dropSealed(tx, &rec); err != nil {
			return err
		}
		if err := put(b, sid, rec); err != nil {
			return err
		}
		revoked = true
		return appendFeed(tx, store.Revocation{SessionID: sid, Subject: rec.Subject, Until: until})
	})
	if revoked {
		s.notify()
	}
	return revoked, err
}

// RevokeSubject implements store.Store.
func (s *Store) RevokeSubject(_ context.Context, sub string, now, until time.Time) ([]string, error) {
	var ids []string
	err := s.update(func(tx *bolt.Tx) error {
		ids = nil
		sessions := tx.Bucket(bucketSessions)
		prefix := []byte(sub + "\x00")
		c := tx.Bucket(bucketSubjects).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			sid := string(k[len(prefix):])
			rec, ok, err := get[sessionRecord](sessions, sid)
			if err != nil {
				return err
			}
			if !ok || !rec.session().Active(now) {
				continue
			}
			rec.RevokedAt = now
			if err := dropSealed(tx, &rec); err != nil {
				return err
			}
			if err := put(sessions, sid, rec); err != nil {
				return err
			}
			if err := appendFeed(tx, store.Revocation{SessionID: sid, Subject: sub, Until: until}); err != nil {
				return err
			}
			ids = append(ids, sid)
		}
		return nil
	})
	if len(ids) > 0 && err == nil {
		s.notify()
	}
	return ids, err
}

// dropSealed deletes the session's live sealed pair, if any: after a newer
// rotation or a revocation it can never be replayed.
func dropSealed(tx *bolt.Tx, rec *sessionRecord) error {
	if rec.SealedKey == nil {
		return nil
	}
	if err := tx.Bucket(bucketSealed).Delete(rec.SealedKey); err != nil {
		return err
	}
	rec.SealedKey = nil
	return nil
}

func appendFeed(tx *bolt.Tx, r store.Revocation) error {
	b := tx.Bucket(bucketFeed)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return put(b, string(seqKey(seq)), feedRecord{SessionID: r.SessionID, Subject: r.Subject, Until: r.Until})
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Revocations implements store.Store. Cursors are feed sequence numbers.
func (s *Store) Revocations(ctx context.Context, cursor string, now time.Time, wait time.Duration) ([]store.Revocation, string, error) {
	return store.WaitFeed(ctx, cursor, wait, func(after uint64) ([]store.Revocation, uint64, <-chan struct{}, error) {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		out, last, err := s.readFeed(after, now)
		return out, last, changed, err
	})
}

func (s *Store) readFeed(after uint64, now time.Time) ([]store.Revocation, uint64, error) {
	var out []store.Revocation
	last := after
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFeed)
		if seq := b.Sequence(); seq < last {
			// A cursor from before a reset or another store: start over.
			last, after = 0, 0
		}
		c := b.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			var r feedRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode feed entry: %w", err)
			}
			last = binary.BigEndian.Uint64(k)
			if r.Until.After(now) {
				out = append(out, store.Revocation{SessionID: r.SessionID, Subject: r.Subject, Until: r.Until})
			}
		}
		return nil
	})
	return out, last, err
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }
