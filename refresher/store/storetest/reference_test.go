package storetest_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

// TestReference runs the suite against a minimal, obviously correct
// in-test store, so the suite itself is checked independently of the real
// backends (which live in their own packages and run it too).
func TestReference(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newRef() })
}

type refStore struct {
	mu       sync.Mutex
	sessions map[string]store.Session
	tokens   map[string]store.Token
	sealed   map[string][]byte
	feed     []store.Revocation
	changed  chan struct{} // closed and replaced on every feed append
}

var _ store.Store = (*refStore)(nil)

func newRef() *refStore {
	return &refStore{
		sessions: map[string]store.Session{},
		tokens:   map[string]store.Token{},
		sealed:   map[string][]byte{},
		changed:  make(chan struct{}),
	}
}

func (r *refStore) CreateSession(_ context.Context, s store.Session, first store.Token) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sessions[s.ID]; ok {
		return store.ErrExists
	}
	if _, ok := r.tokens[first.Hash]; ok {
		return store.ErrExists
	}
	r.sessions[s.ID] = s
	first.SessionID = s.ID
	r.tokens[first.Hash] = first
	return nil
}

func (r *refStore) GetSession(_ context.Context, sid string) (store.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[sid]
	if !ok {
		return store.Session{}, store.ErrNotFound
	}
	return s, nil
}

func (r *refStore) GetToken(_ context.Context, hash string) (store.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tok, ok := r.tokens[hash]
	if !ok {
		return store.Token{}, store.ErrNotFound
	}
	return tok, nil
}

func (r *refStore) Rotate(_ context.Context, req store.RotateRequest) (store.RotateResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.tokens[req.ParentHash]
	if !ok {
		return store.RotateResult{Outcome: store.Unknown}, nil
	}
	s := r.sessions[p.SessionID]
	res := store.RotateResult{Session: s, Parent: p}
	switch {
	case !s.RevokedAt.IsZero():
		res.Outcome = store.Revoked
	case !req.Now.Before(s.ExpiresAt):
		res.Outcome = store.Expired
	case s.JKT != "" && req.JKT != s.JKT:
		res.Outcome = store.KeyMismatch
	case !p.RotatedAt.IsZero():
		cur, isCur := r.tokens[p.ChildHash]
		if req.Now.Before(p.RotatedAt.Add(req.Grace)) && isCur && cur.RotatedAt.IsZero() {
			res.Outcome = store.Replayed
			res.Sealed = r.sealed[p.Hash]
			break
		}
		res.Outcome = store.ReuseDetected
		s.RevokedAt = req.Now
		r.sessions[s.ID] = s
		res.Session = s
		r.appendFeed(store.Revocation{SessionID: s.ID, Subject: s.Subject, Until: req.RevokeUntil})
	case !req.Now.Before(p.ExpiresAt):
		res.Outcome = store.Expired
	default:
		res.Outcome = store.Rotated
		p.RotatedAt = req.Now
		p.ChildHash = req.Child.Hash
		r.tokens[p.Hash] = p
		r.sealed[p.Hash] = req.Sealed
		child := req.Child
		child.SessionID = s.ID
		child.Generation = p.Generation + 1
		r.tokens[child.Hash] = child
		s.Generation++
		if s.JKT == "" {
			s.JKT = req.JKT
		}
		r.sessions[s.ID] = s
		res.Session, res.Parent = s, p
	}
	return res, nil
}

func (r *refStore) appendFeed(rev store.Revocation) {
	r.feed = append(r.feed, rev)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *refStore) PatchClaims(_ context.Context, sid string, claims json.RawMessage, now time.Time) (store.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[sid]
	if !ok || !s.Active(now) {
		return store.Session{}, store.ErrNotFound
	}
	s.Claims = claims
	r.sessions[sid] = s
	return s, nil
}

func (r *refStore) RevokeSession(_ context.Context, sid string, now, until time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[sid]
	if !ok {
		return false, store.ErrNotFound
	}
	if !s.RevokedAt.IsZero() {
		return false, nil
	}
	s.RevokedAt = now
	r.sessions[sid] = s
	r.appendFeed(store.Revocation{SessionID: sid, Subject: s.Subject, Until: until})
	return true, nil
}

func (r *refStore) RevokeSubject(_ context.Context, sub string, now, until time.Time) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for sid, s := range r.sessions {
		if s.Subject == sub && s.Active(now) {
			s.RevokedAt = now
			r.sessions[sid] = s
			r.appendFeed(store.Revocation{SessionID: sid, Subject: sub, Until: until})
			ids = append(ids, sid)
		}
	}
	return ids, nil
}

// Revocations uses the feed index as the cursor.
func (r *refStore) Revocations(ctx context.Context, cursor string, now time.Time, wait time.Duration) ([]store.Revocation, string, error) {
	pos, err := strconv.Atoi(cursor)
	if err != nil || pos < 0 {
		pos = 0
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		if pos > len(r.feed) {
			pos = 0
		}
		var out []store.Revocation
		for _, rev := range r.feed[pos:] {
			if rev.Until.After(now) {
				out = append(out, rev)
			}
		}
		end := len(r.feed)
		changed := r.changed
		r.mu.Unlock()
		if len(out) > 0 || end > pos {
			return out, strconv.Itoa(end), nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, strconv.Itoa(pos), nil
		case <-ctx.Done():
			return nil, strconv.Itoa(pos), nil
		}
	}
}

func (r *refStore) Ping(context.Context) error { return nil }
func (r *refStore) Close() error               { return nil }
