// Package boltstore is the embedded Store: one bbolt file on local disk, the
// default for a single refresher. Sessions, tokens and the revocation feed
// survive restarts. bbolt locks the file, so only one process can open it;
// every decision runs inside one read-write transaction, which makes Rotate
// and the revocations atomic.
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

	"github.com/tokengate/tokengate/refresher/store"
)

var _ store.Store = (*Store)(nil)

var (
	bucketSessions = []byte("sessions") // sid → sessionRecord
	bucketTokens   = []byte("tokens")   // token hash → tokenRecord
	bucketSubjects = []byte("subjects") // sub \x00 sid → empty (index for RevokeSubject)
	bucketFeed     = []byte("feed")     // big-endian seq → feedRecord
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
}

type tokenRecord struct {
	Hash        string    `json:"hash"`
	SessionID   string    `json:"sid"`
	Generation  uint64    `json:"generation"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	RotatedAt   time.Time `json:"rotated_at"`
	ChildHash   string    `json:"child,omitempty"`
	Sealed      []byte    `json:"sealed,omitempty"`
	SealedUntil time.Time `json:"sealed_until"`
}

type feedRecord struct {
	SessionID string    `json:"sid"`
	Subject   string    `json:"sub"`
	Until     time.Time `json:"until"`
}

func fromSession(s store.Session) sessionRecord {
	return sessionRecord(s)
}

func (r sessionRecord) session() store.Session { return store.Session(r) }

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
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open bolt store %s: the file is locked by another process", path)
		}
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSessions, bucketTokens, bucketSubjects, bucketFeed} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
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
	return s.db.Update(func(tx *bolt.Tx) error {
		sessions, tokens := tx.Bucket(bucketSessions), tx.Bucket(bucketTokens)
		if sessions.Get([]byte(sess.ID)) != nil || tokens.Get([]byte(first.Hash)) != nil {
			return store.ErrExists
		}
		first.SessionID = sess.ID
		first.Generation = sess.Generation
		if err := put(sessions, sess.ID, fromSession(sess)); err != nil {
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
	err := s.db.Update(func(tx *bolt.Tx) error {
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
		sess := rec.session()
		res = store.RotateResult{Outcome: store.Decide(parent.token(), sess, req), Session: sess, Parent: parent.token()}
		switch res.Outcome {
		case store.Replayed:
			if req.Now.Before(parent.SealedUntil) {
				res.Sealed = bytes.Clone(parent.Sealed)
			}
		case store.ReuseDetected:
			sess.RevokedAt = req.Now
			res.Session = sess
			if err := put(sessions, sess.ID, fromSession(sess)); err != nil {
				return err
			}
			appended = true
			return appendFeed(tx, store.Revocation{SessionID: sess.ID, Subject: sess.Subject, Until: req.RevokeUntil})
		case store.Rotated:
			if tokens.Get([]byte(req.Child.Hash)) != nil {
				return store.ErrExists
			}
			parent.RotatedAt = req.Now
			parent.ChildHash = req.Child.Hash
			parent.Sealed = req.Sealed
			parent.SealedUntil = req.Now.Add(req.Grace)
			child := fromToken(req.Child)
			child.SessionID = sess.ID
			child.Generation = parent.Generation + 1
			sess.Generation++
			res.Session, res.Parent = sess, parent.token()
			if err := put(tokens, parent.Hash, parent); err != nil {
				return err
			}
			if err := put(tokens, child.Hash, child); err != nil {
				return err
			}
			return put(sessions, sess.ID, fromSession(sess))
		}
		return nil
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

// PatchClaims implements store.Store.
func (s *Store) PatchClaims(_ context.Context, sid string, claims json.RawMessage, now time.Time) (store.Session, error) {
	var out store.Session
	err := s.db.Update(func(tx *bolt.Tx) error {
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
	err := s.db.Update(func(tx *bolt.Tx) error {
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
	err := s.db.Update(func(tx *bolt.Tx) error {
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

// Prune deletes what can no longer matter at now: feed entries past their
// Until, and sessions (with their tokens and index entries) that expired
// before now. The refresher calls it periodically. Keys are collected first
// because deleting under a bbolt cursor skips the following key.
func (s *Store) Prune(now time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var feedKeys, sessionKeys, tokenKeys, subjectKeys [][]byte
		feed := tx.Bucket(bucketFeed)
		_ = feed.ForEach(func(k, v []byte) error {
			var r feedRecord
			if err := json.Unmarshal(v, &r); err != nil || !r.Until.After(now) {
				feedKeys = append(feedKeys, bytes.Clone(k))
			}
			return nil
		})
		dead := map[string]bool{}
		sessions := tx.Bucket(bucketSessions)
		_ = sessions.ForEach(func(k, v []byte) error {
			var r sessionRecord
			if err := json.Unmarshal(v, &r); err == nil && !now.Before(r.ExpiresAt) {
				dead[r.ID] = true
				sessionKeys = append(sessionKeys, bytes.Clone(k))
				subjectKeys = append(subjectKeys, subjectKey(r.Subject, r.ID))
			}
			return nil
		})
		tokens := tx.Bucket(bucketTokens)
		if len(dead) > 0 {
			_ = tokens.ForEach(func(k, v []byte) error {
				var r tokenRecord
				if err := json.Unmarshal(v, &r); err == nil && dead[r.SessionID] {
					tokenKeys = append(tokenKeys, bytes.Clone(k))
				}
				return nil
			})
		}
		for _, del := range []struct {
			b    *bolt.Bucket
			keys [][]byte
		}{{feed, feedKeys}, {sessions, sessionKeys}, {tokens, tokenKeys}, {tx.Bucket(bucketSubjects), subjectKeys}} {
			for _, k := range del.keys {
				if err := del.b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Ping implements store.Store: a read transaction proves the file is open.
func (s *Store) Ping(context.Context) error {
	return s.db.View(func(*bolt.Tx) error { return nil })
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }
