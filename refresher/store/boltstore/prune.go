package boltstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// formatVersion is the file layout this package writes. Version 1 (no meta
// bucket) kept every sealed pair inside its token record for the session's
// whole life; version 2 keeps them in bucketSealed and indexes sessions by
// expiry. Open migrates a version 1 file once.
const formatVersion = "2"

var keyFormat = []byte("format")

// migrate brings a file to formatVersion inside Open's transaction: sealed
// pairs move out of the token records (those still inside their grace
// window stay replayable, so a restart for the upgrade never turns a retry
// into reuse), every session gets its chain head and an expiry index entry.
func migrate(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if string(meta.Get(keyFormat)) == formatVersion {
		return nil
	}
	tokens, sessions, sealed := tx.Bucket(bucketTokens), tx.Bucket(bucketSessions), tx.Bucket(bucketSealed)
	first := map[string]string{}
	var rewrite []tokenRecord
	err := tokens.ForEach(func(k, v []byte) error {
		var r tokenRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode token record %q: %w", k, err)
		}
		if r.Generation == 0 {
			first[r.SessionID] = r.Hash
		}
		if r.Sealed != nil {
			rewrite = append(rewrite, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range rewrite {
		if err := sealed.Put(sealedKey(r.SealedUntil, r.Hash), r.Sealed); err != nil {
			return err
		}
		r.Sealed = nil
		if err := put(tokens, r.Hash, r); err != nil {
			return err
		}
	}
	var recs []sessionRecord
	err = sessions.ForEach(func(k, v []byte) error {
		var r sessionRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode session record %q: %w", k, err)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.First == "" {
			r.First = first[r.ID]
		}
		if err := put(sessions, r.ID, r); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExpiry).Put(expiryKey(r.ExpiresAt, r.ID), nil); err != nil {
			return err
		}
	}
	return meta.Put(keyFormat, []byte(formatVersion))
}

// pruneBatch bounds the sessions one Prune transaction deletes, so a backlog
// (after a long stop) is worked off in several short transactions instead of
// one that holds the writer lock for long.
const pruneBatch = 1000

// Prune deletes what can no longer matter at now: sealed pairs past their
// grace window, feed entries past their until, and sessions that expired
// (absolute expiry) with every token of their chain and their subject index
// entry. Token records of live sessions stay: an old generation must still
// be recognised as reuse (store.Store.Rotate). Sealed pairs and sessions are
// found through time-ordered indexes, so a pass costs what it deletes, not
// the size of the file. The refresher calls it every few seconds.
func (s *Store) Prune(now time.Time) error {
	for {
		more := false
		err := s.update(func(tx *bolt.Tx) error {
			var err error
			more, err = pruneOnce(tx, now)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
}

// pruneOnce deletes up to pruneBatch expired sessions and everything else
// due; it reports whether expired sessions remain.
func pruneOnce(tx *bolt.Tx, now time.Time) (bool, error) {
	if err := deleteDue(tx.Bucket(bucketSealed), now, -1, nil); err != nil {
		return false, err
	}
	var feedKeys [][]byte
	feed := tx.Bucket(bucketFeed)
	_ = feed.ForEach(func(k, v []byte) error {
		var r feedRecord
		if err := json.Unmarshal(v, &r); err != nil || !r.Until.After(now) {
			feedKeys = append(feedKeys, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range feedKeys {
		if err := feed.Delete(k); err != nil {
			return false, err
		}
	}
	var sids []string
	if err := deleteDue(tx.Bucket(bucketExpiry), now, pruneBatch, func(k []byte) { sids = append(sids, string(k[8:])) }); err != nil {
		return false, err
	}
	for _, sid := range sids {
		if err := deleteSession(tx, sid); err != nil {
			return false, err
		}
	}
	return len(sids) == pruneBatch, nil
}

// deleteDue deletes up to limit (-1: all) keys of a timeKey-ordered bucket
// whose time is not after now, calling each with the key first. Keys are
// collected before deleting because deleting under a bbolt cursor skips the
// following key.
func deleteDue(b *bolt.Bucket, now time.Time, limit int, each func([]byte)) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) != limit; k, _ = c.Next() {
		if len(k) < 8 || keyTime(k).After(now) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if each != nil {
			each(k)
		}
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// deleteSession deletes an expired session, its subject index entry, its
// sealed pair and its whole token chain.
func deleteSession(tx *bolt.Tx, sid string) error {
	sessions, tokens := tx.Bucket(bucketSessions), tx.Bucket(bucketTokens)
	rec, ok, err := get[sessionRecord](sessions, sid)
	if err != nil || !ok {
		return err
	}
	if err := dropSealed(tx, &rec); err != nil {
		return err
	}
	// Walk first → child → …; the chain ends at the current token. The
	// bound guards against a cycle in a damaged file.
	for hash, n := rec.First, uint64(0); hash != "" && n <= rec.Generation; n++ {
		t, ok, err := get[tokenRecord](tokens, hash)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := tokens.Delete([]byte(hash)); err != nil {
			return err
		}
		hash = t.ChildHash
	}
	if err := tx.Bucket(bucketSubjects).Delete(subjectKey(rec.Subject, sid)); err != nil {
		return err
	}
	return sessions.Delete([]byte(sid))
}
