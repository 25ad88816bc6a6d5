// Package memstore is the in-memory Store: for tests and throwaway dev runs.
// Everything is lost when the process exits; one mutex makes every call
// atomic.
package memstore

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

var (
	_ store.Store  = (*Store)(nil)
	_ store.Pruner = (*Store)(nil)
)

type tokenRecord struct {
	token       store.Token
	sealed      []byte
	sealedUntil time.Time
}

type feedEntry struct {
	seq uint64
	rev store.Revocation
}

// Store keeps sessions, tokens and the revocation feed in maps.
type Store struct {
	mu       sync.Mutex
	sessions map[string]store.Session
	tokens   map[string]*tokenRecord
	feed     []feedEntry
	seq      uint64
	// changed is closed (and replaced) whenever the feed grows, waking
	// long-polling Revocations calls.
	changed chan struct{}
	closed  bool
}

// New returns an empty store.
func New() *Store {
	return &Store{
		sessions: map[string]store.Session{},
		tokens:   map[string]*tokenRecord{},
		changed:  make(chan struct{}),
	}
}

// CreateSession implements store.Store.
func (m *Store) CreateSession(_ context.Context, s store.Session, first store.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sessions[s.ID]; ok {
		return store.ErrExists
	}
	if _, ok := m.tokens[first.Hash]; ok {
		return store.ErrExists
	}
	first.SessionID = s.ID
	first.Generation = s.Generation
	m.sessions[s.ID] = s
	m.tokens[first.Hash] = &tokenRecord{token: first}
	return nil
}

// GetSession implements store.Store.
func (m *Store) GetSession(_ context.Context, sid string) (store.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[sid]
	if !ok {
		return store.Session{}, store.ErrNotFound
	}
	return s, nil
}

// GetToken implements store.Store.
func (m *Store) GetToken(_ context.Context, hash string) (store.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.tokens[hash]
	if !ok {
		return store.Token{}, store.ErrNotFound
	}
	return r.token, nil
}

// Rotate implements store.Store.
func (m *Store) Rotate(_ context.Context, req store.RotateRequest) (store.RotateResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, ok := m.tokens[req.ParentHash]
	if !ok {
		return store.RotateResult{Outcome: store.Unknown}, nil
	}
	s, ok := m.sessions[parent.token.SessionID]
	if !ok {
		// A token whose session has gone (pruned) is as good as unknown.
		return store.RotateResult{Outcome: store.Unknown}, nil
	}
	res, w := store.Apply(parent.token, s, req)
	if res.Outcome == store.Replayed && req.Now.Before(parent.sealedUntil) {
		res.Sealed = slices.Clone(parent.sealed)
	}
	if w.Child != nil {
		if _, taken := m.tokens[w.Child.Hash]; taken {
			return store.RotateResult{}, store.ErrExists
		}
		m.tokens[w.Child.Hash] = &tokenRecord{token: *w.Child}
	}
	if w.Parent != nil {
		parent.token = *w.Parent
		parent.sealed = slices.Clone(w.Sealed)
		parent.sealedUntil = w.SealedUntil
	}
	if w.Session != nil {
		m.sessions[w.Session.ID] = *w.Session
	}
	if w.Revocation != nil {
		m.appendFeed(*w.Revocation)
	}
	return res, nil
}

// PatchClaims implements store.Store.
func (m *Store) PatchClaims(_ context.Context, sid string, claims json.RawMessage, now time.Time) (store.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[sid]
	if !ok || !s.Active(now) {
		return store.Session{}, store.ErrNotFound
	}
	s.Claims = slices.Clone(claims)
	m.sessions[sid] = s
	return s, nil
}

// RevokeSession implements store.Store.
func (m *Store) RevokeSession(_ context.Context, sid string, now, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[sid]
	if !ok {
		return false, store.ErrNotFound
	}
	if !s.RevokedAt.IsZero() {
		return false, nil
	}
	s.RevokedAt = now
	m.sessions[sid] = s
	m.appendFeed(store.Revocation{SessionID: sid, Subject: s.Subject, Until: until})
	return true, nil
}

// RevokeSubject implements store.Store.
func (m *Store) RevokeSubject(_ context.Context, sub string, now, until time.Time) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, s := range m.sessions {
		if s.Subject != sub || !s.Active(now) {
			continue
		}
		s.RevokedAt = now
		m.sessions[id] = s
		m.appendFeed(store.Revocation{SessionID: id, Subject: sub, Until: until})
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// appendFeed adds an entry and wakes waiters; m.mu must be held.
func (m *Store) appendFeed(r store.Revocation) {
	m.seq++
	m.feed = append(m.feed, feedEntry{seq: m.seq, rev: r})
	close(m.changed)
	m.changed = make(chan struct{})
}

// Revocations implements store.Store. Cursors are feed sequence numbers.
func (m *Store) Revocations(ctx context.Context, cursor string, now time.Time, wait time.Duration) ([]store.Revocation, string, error) {
	return store.WaitFeed(ctx, cursor, wait, func(after uint64) ([]store.Revocation, uint64, <-chan struct{}, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.prune(now)
		var out []store.Revocation
		last := after
		for _, e := range m.feed {
			if e.seq > after && e.rev.Until.After(now) {
				out = append(out, e.rev)
			}
			if e.seq > last {
				last = e.seq
			}
		}
		return out, last, m.changed, nil
	})
}

// prune drops feed entries whose Until has passed; m.mu must be held.
func (m *Store) prune(now time.Time) {
	m.feed = slices.DeleteFunc(m.feed, func(e feedEntry) bool { return !e.rev.Until.After(now) })
}

// Prune drops sessions that expired before now, with their tokens, and feed
// entries past their Until. The refresher calls it periodically, so a
// long-running memory store does not grow without bound.
func (m *Store) Prune(now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(now)
	for id, s := range m.sessions {
		if !now.Before(s.ExpiresAt) {
			delete(m.sessions, id)
		}
	}
	for h, r := range m.tokens {
		if _, ok := m.sessions[r.token.SessionID]; !ok {
			delete(m.tokens, h)
		}
	}
	return nil
}

// Ping implements store.Store.
func (m *Store) Ping(context.Context) error { return nil }

// Close implements store.Store.
func (m *Store) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
