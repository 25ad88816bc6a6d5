// Package redisstore is the store.Store for many refresher replicas: Redis
// standalone, Sentinel or Cluster through go-redis's UniversalClient.
//
// Layout (P = key prefix, "tokengate:" by default):
//
//	P s:{sid}          hash   session (sub, created, idle, exp, rev, gen, cur, [jkt, dev])
//	P c:{sid}          string the session's claims (JSON)
//	P k:{sid}          hash   refresh-token records: HASH → "gen|iat|exp|rot|child"
//	P p:{sid}:HASH     string sealed pair the rotation of HASH issued (grace window)
//	P h:HASH           string token hash → sid (the lookup a refresh starts from)
//	P u:SUB            hash   sids of a subject (for revoke-all)
//	P feed             stream revocation feed (sid, sub, until)
//
// Every key of a session carries the hash tag {sid}, so each atomic step (a
// Lua script, see scripts.go) touches one Cluster slot. Every key expires:
// session, token records and index at the session's absolute expiry, the
// sealed pair after the grace window, subject sets with their longest
// session, and the feed stream when its newest entry's until passes.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/refresher/store"
)

// sealedSlack keeps the sealed pair a little beyond the grace window, so a
// replica whose clock is slightly behind the rotating one can still replay
// it; the decision itself uses the request's Now, never Redis's clock.
const sealedSlack = 2 * time.Second

// sidCacheSize bounds the in-process cache of token hash → sid (about 200
// bytes an entry).
const sidCacheSize = 1 << 14

// feedPage is the most entries one Revocations call returns; the cursor
// continues from there.
const feedPage = 1000

// ErrLate is returned by Rotate when its script reached Redis only after
// the call's deadline (Redis stalled with the script queued): the script
// did nothing, so the caller's 503 is the truth and the client's retry is
// decided afresh (see clock.go).
var ErrLate = errors.New("the rotation reached Redis after its deadline and was not applied")

// Store is a store.Store on Redis.
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	// split: keys outside a session's slot (token index, subject index,
	// feed) are written by separate commands, as Redis Cluster requires.
	split bool
	// sids caches token hash → sid. The mapping never changes once written
	// (a hash is a fresh 256-bit token's), so the cache cannot be stale; it
	// saves the index round trip of a refresh that follows a lookup or a
	// rotation on the same replica.
	sids *lru.Cache[string, string]
	// watch is the one blocking reader of the feed that wakes every
	// waiting Revocations call.
	watch feedWatch
	// clock estimates Redis's clock against ours, for the rotation
	// deadline (clock.go).
	clock redisClock
	// durLog receives the persistence check, made at the first Ping that
	// succeeds (at Open, or once an unreachable Redis answers).
	durLog     *slog.Logger
	durChecked atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open connects to Redis at rawURL (redis:// or rediss://; see parseURL for
// Sentinel and Cluster). Only a bad URL or bad options are errors.
func Open(ctx context.Context, rawURL string, o Options) (*Store, error) {
	p, err := parseURL(rawURL, o)
	if err != nil {
		return nil, err
	}
	if o.Logger != nil {
		redis.SetLogger(redisLogger{o.Logger})
	}
	sids, err := lru.New[string, string](sidCacheSize)
	if err != nil {
		return nil, err
	}
	s := &Store{
		sids:    sids,
		rdb:     redis.NewUniversalClient(&p.opts),
		prefix:  p.prefix,
		timeout: p.timeout,
		split:   p.cluster,
		durLog:  o.Logger,
	}
	// An unreachable Redis is not a start-up error: the refresher starts
	// not-ready and serves as soon as Redis answers, so a Redis restart
	// never turns into a crash loop of every replica.
	if err := s.Ping(ctx); err != nil {
		if o.Logger != nil {
			o.Logger.WarnContext(ctx, "redis store unreachable at start; not ready until it answers",
				"redis", redact(rawURL), "error", err)
		}
		return s, nil
	}
	// A first clock reading; without it the first rotation takes one.
	sctx, cancel := s.op(ctx)
	_ = s.sampleClock(sctx)
	cancel()
	return s, nil
}

// Client returns the underlying go-redis client (benchmarks, sizing).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

func (s *Store) sessionKey(sid string) string { return s.prefix + "s:{" + sid + "}" }
func (s *Store) tokensKey(sid string) string  { return s.prefix + "k:{" + sid + "}" }
func (s *Store) sealedKey(sid, hash string) string {
	return s.prefix + "p:{" + sid + "}:" + hash
}
func (s *Store) claimsKey(sid string) string  { return s.prefix + "c:{" + sid + "}" }
func (s *Store) indexKey(hash string) string  { return s.prefix + "h:" + hash }
func (s *Store) subjectKey(sub string) string { return s.prefix + "u:" + sub }
func (s *Store) feedKey() string              { return s.prefix + "feed" }

func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// Times are stored as 16 hex digits of the Unix nanoseconds with the sign
// bit flipped: fixed width and ordered like the instants, so the scripts
// compare them as strings, exactly, and they are half the size of an
// RFC 3339 string. "" is the zero time.
const signBit = 1 << 63

func encodeTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	// What fmt.Sprintf("%016x", …) writes, without fmt: a rotation
	// encodes five of these.
	const digits = "0123456789abcdef"
	var b [16]byte
	v := uint64(t.UnixNano()) ^ signBit
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

func decodeTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil || len(v) != 16 {
		return time.Time{}, fmt.Errorf("time %q: not 16 hex digits", v)
	}
	return time.Unix(0, int64(n^signBit)).UTC(), nil
}

// millis is a TTL in whole milliseconds, at least one second so a key is
// never written already expired.
func millis(d time.Duration) int64 {
	return max(d.Milliseconds(), 1000)
}

func (s *Store) CreateSession(ctx context.Context, sess store.Session, first store.Token) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	ttl := millis(sess.ExpiresAt.Sub(sess.CreatedAt))
	claims := string(sess.Claims)
	args := []any{sess.ID, sess.Subject, claims, encodeTime(sess.CreatedAt), int64(sess.IdleTTL),
		encodeTime(sess.ExpiresAt), first.Hash, encodeTime(first.IssuedAt), encodeTime(first.ExpiresAt), ttl,
		sess.JKT, sess.Device}
	keys := []string{s.sessionKey(sess.ID), s.tokensKey(sess.ID), s.claimsKey(sess.ID)}
	if !s.split {
		keys = append(keys, s.indexKey(first.Hash), s.subjectKey(sess.Subject))
		n, err := createScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("redisstore: create session: %w", err)
		}
		if n == 0 {
			return store.ErrExists
		}
		s.sids.Add(first.Hash, sess.ID)
		return nil
	}

	// Cluster: claim the token hash first (refusing a taken one), then
	// index the subject (a dangling entry is harmless, a missing one would
	// let a session escape revoke-all), then create the session.
	idx := s.indexKey(first.Hash)
	claimed, err := s.rdb.SetNX(ctx, idx, sess.ID, time.Duration(ttl)*time.Millisecond).Result()
	if err != nil {
		return fmt.Errorf("redisstore: create session: %w", err)
	}
	if !claimed {
		owner, err := s.rdb.Get(ctx, idx).Result()
		if err != nil || owner != sess.ID {
			return store.ErrExists
		}
	}
	if err := indexScript.Run(ctx, s.rdb, []string{s.subjectKey(sess.Subject)}, sess.ID, ttl).Err(); err != nil {
		return fmt.Errorf("redisstore: index subject: %w", err)
	}
	n, err := createScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return fmt.Errorf("redisstore: create session: %w", err)
	}
	if n == 0 {
		if claimed {
			s.rdb.Del(ctx, idx)
		}
		return store.ErrExists
	}
	s.sids.Add(first.Hash, sess.ID)
	return nil
}

func (s *Store) GetSession(ctx context.Context, sid string) (store.Session, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var fields *redis.MapStringStringCmd
	var claims *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		fields = p.HGetAll(ctx, s.sessionKey(sid))
		claims = p.Get(ctx, s.claimsKey(sid))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return store.Session{}, fmt.Errorf("redisstore: get session: %w", err)
	}
	if len(fields.Val()) == 0 {
		return store.Session{}, store.ErrNotFound
	}
	return decodeSession(sid, fields.Val(), claims.Val())
}

func (s *Store) GetToken(ctx context.Context, hash string) (store.Token, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	sid, err := s.lookup(ctx, hash)
	if errors.Is(err, redis.Nil) {
		return store.Token{}, store.ErrNotFound
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("redisstore: get token: %w", err)
	}
	rec, err := s.rdb.HGet(ctx, s.tokensKey(sid), hash).Result()
	if errors.Is(err, redis.Nil) {
		return store.Token{}, store.ErrNotFound
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("redisstore: get token: %w", err)
	}
	return decodeToken(hash, sid, rec)
}

func (s *Store) Rotate(ctx context.Context, req store.RotateRequest) (store.RotateResult, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	sid, err := s.lookup(ctx, req.ParentHash)
	if errors.Is(err, redis.Nil) {
		return store.RotateResult{Outcome: store.Unknown}, nil
	}
	if err != nil {
		return store.RotateResult{}, fmt.Errorf("redisstore: rotate: %w", err)
	}
	return s.rotate(ctx, sid, req, nil)
}

var _ store.SnapshotRotator = (*Store)(nil)

// RotateIfCurrent is the rotation of a child minted from a snapshot of its
// session: the same script as Rotate, which also checks the snapshot's
// generation and claims where it would rotate, so a warm rotation is one
// round trip (the script call) with nothing read before it.
func (s *Store) RotateIfCurrent(ctx context.Context, req store.RotateRequest, want store.Snapshot) (store.RotateResult, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	return s.rotate(ctx, want.Session.ID, req, &want)
}

// rotate runs rotateScript for a parent of session sid; want, if not nil,
// is the snapshot the child was minted from.
func (s *Store) rotate(ctx context.Context, sid string, req store.RotateRequest, want *store.Snapshot) (store.RotateResult, error) {
	keys := []string{s.sessionKey(sid), s.tokensKey(sid), s.sealedKey(sid, req.ParentHash), s.claimsKey(sid)}
	if !s.split {
		keys = append(keys, s.feedKey(), s.indexKey(req.Child.Hash))
	}
	feedTTL := millis(req.RevokeUntil.Sub(req.Now))
	deadline, err := s.serverDeadline(ctx)
	if err != nil {
		return store.RotateResult{}, fmt.Errorf("redisstore: rotate: read Redis time: %w", err)
	}
	args := []any{encodeTime(req.Now), encodeTime(req.Now.Add(-req.Grace)), req.Child.Hash,
		encodeTime(req.Child.IssuedAt), encodeTime(req.Child.ExpiresAt), req.Sealed,
		millis(req.Grace + sealedSlack), encodeTime(req.RevokeUntil), feedTTL, req.ParentHash, sid,
		deadline, req.JKT}
	if want != nil {
		args = append(args, strconv.FormatUint(want.Session.Generation, 10), string(want.Session.Claims))
	}
	sent := time.Now()
	reply, err := rotateScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return store.RotateResult{}, fmt.Errorf("redisstore: rotate: %w", err)
	}
	if n := len(reply); n >= 3 {
		if server, ok := parseTime(reply[n-2], reply[n-1]); ok {
			s.clock.observe(sent, time.Now(), server)
		}
	}
	res, pttl, fed, err := decodeRotate(sid, req.ParentHash, reply, want, req.JKT)
	if errors.Is(err, store.ErrStale) {
		return store.RotateResult{}, err
	}
	if err != nil {
		return store.RotateResult{}, fmt.Errorf("redisstore: rotate: %w", err)
	}
	if res.Outcome == store.Rotated {
		s.sids.Add(req.Child.Hash, sid)
	}
	if !s.split {
		return res, nil
	}
	// Cluster: the steps outside the session's slot, after the decision.
	// If one fails the caller answers 503 and the client retries; the
	// retry is a replay (which re-indexes the child) or finds the session
	// revoked, so nothing is lost.
	switch res.Outcome {
	case store.Rotated, store.Replayed:
		if pttl > 0 {
			if err := s.rdb.Set(ctx, s.indexKey(res.Parent.ChildHash), sid, time.Duration(pttl)*time.Millisecond).Err(); err != nil {
				return store.RotateResult{}, fmt.Errorf("redisstore: index child token: %w", err)
			}
		}
	case store.ReuseDetected, store.Revoked:
		if !fed {
			if err := s.appendFeed(ctx, sid, res.Session.Subject, req.Now, req.RevokeUntil); err != nil {
				return store.RotateResult{}, err
			}
		}
	}
	return res, nil
}

// lookup finds the sid of a token hash: cache, then index (redis.Nil if
// there is none).
func (s *Store) lookup(ctx context.Context, hash string) (string, error) {
	if sid, ok := s.sids.Get(hash); ok {
		return sid, nil
	}
	sid, err := s.rdb.Get(ctx, s.indexKey(hash)).Result()
	if err != nil {
		return "", err
	}
	s.sids.Add(hash, sid)
	return sid, nil
}

func (s *Store) appendFeed(ctx context.Context, sid, sub string, now, until time.Time) error {
	err := appendScript.Run(ctx, s.rdb, []string{s.feedKey()},
		sid, sub, encodeTime(until), millis(until.Sub(now)), encodeTime(now)).Err()
	if err != nil {
		return fmt.Errorf("redisstore: append revocation feed: %w", err)
	}
	if err := markFedScript.Run(ctx, s.rdb, []string{s.sessionKey(sid)}).Err(); err != nil {
		return fmt.Errorf("redisstore: mark revocation fed: %w", err)
	}
	return nil
}

func (s *Store) PatchClaims(ctx context.Context, sid string, claims json.RawMessage, now time.Time) (store.Session, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	reply, err := patchScript.Run(ctx, s.rdb, []string{s.sessionKey(sid), s.claimsKey(sid)}, string(claims), encodeTime(now)).Slice()
	if errors.Is(err, redis.Nil) {
		return store.Session{}, store.ErrNotFound
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("redisstore: patch claims: %w", err)
	}
	if len(reply) != 2 {
		return store.Session{}, fmt.Errorf("redisstore: patch claims: unexpected reply %v", reply)
	}
	fields, _ := reply[0].([]any)
	m, err := flatMap(fields)
	if err != nil {
		return store.Session{}, fmt.Errorf("redisstore: patch claims: %w", err)
	}
	return decodeSession(sid, m, string(claims))
}

func (s *Store) RevokeSession(ctx context.Context, sid string, now, until time.Time) (bool, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	code, err := s.revoke(ctx, sid, now, until, false)
	if err != nil {
		return false, err
	}
	if code < 0 {
		return false, store.ErrNotFound
	}
	return code == 1, nil
}

// revoke runs revokeScript and, on Cluster, appends to the feed after it.
// It returns the script's code (-1 unknown, 0 unchanged, 1 revoked).
func (s *Store) revoke(ctx context.Context, sid string, now, until time.Time, onlyActive bool) (int64, error) {
	keys := []string{s.sessionKey(sid)}
	if !s.split {
		keys = append(keys, s.feedKey())
	}
	active := "0"
	if onlyActive {
		active = "1"
	}
	reply, err := revokeScript.Run(ctx, s.rdb, keys, encodeTime(now), encodeTime(until),
		millis(until.Sub(now)), active, sid).Slice()
	if err != nil {
		return 0, fmt.Errorf("redisstore: revoke session: %w", err)
	}
	if len(reply) != 3 {
		return 0, fmt.Errorf("redisstore: revoke session: unexpected reply %v", reply)
	}
	code, _ := reply[0].(int64)
	sub, _ := reply[1].(string)
	fed, _ := reply[2].(string)
	// Cluster: append to the feed as a second step; a revocation whose
	// append failed earlier is appended by the next attempt.
	if s.split && (code == 1 || code == 0 && fed != "1") {
		if err := s.appendFeed(ctx, sid, sub, now, until); err != nil {
			return 0, err
		}
	}
	return code, nil
}

func (s *Store) RevokeSubject(ctx context.Context, sub string, now, until time.Time) ([]string, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	key := s.subjectKey(sub)
	sids, err := s.rdb.HKeys(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: revoke subject: %w", err)
	}
	var revoked []string
	for _, sid := range sids {
		code, err := s.revoke(ctx, sid, now, until, true)
		if err != nil {
			return revoked, err
		}
		switch code {
		case 1:
			revoked = append(revoked, sid)
		case -1:
			// The session expired away (or its creation failed after
			// indexing): prune the index.
			s.rdb.HDel(ctx, key, sid)
		}
	}
	return revoked, nil
}

func (s *Store) Ping(ctx context.Context) error {
	pctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.rdb.Ping(pctx).Err(); err != nil {
		return err
	}
	if s.durLog != nil && s.durChecked.CompareAndSwap(false, true) {
		s.logDurability(ctx, s.durLog)
	}
	return nil
}

// Close stops the feed watcher and closes the connections (which also
// ends the watcher's blocking read).
func (s *Store) Close() error {
	wait := s.watch.close()
	err := s.rdb.Close()
	wait()
	return err
}

func flatMap(v []any) (map[string]string, error) {
	if len(v)%2 != 0 {
		return nil, fmt.Errorf("odd field list of %d", len(v))
	}
	m := make(map[string]string, len(v)/2)
	for i := 0; i < len(v); i += 2 {
		k, ok1 := v[i].(string)
		val, ok2 := v[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("non-string field %v", v[i])
		}
		m[k] = val
	}
	return m, nil
}

// decodeRotate reads rotateScript's reply; want is the snapshot the
// rotation was minted from (nil for none), jkt the request's DPoP key.
func decodeRotate(sid, parent string, reply []any, want *store.Snapshot, jkt string) (res store.RotateResult, pttl int64, fed bool, err error) {
	if len(reply) == 0 {
		return res, 0, false, errors.New("empty reply")
	}
	code, _ := reply[0].(int64)
	switch code {
	case codeUnknown:
		return store.RotateResult{Outcome: store.Unknown}, 0, false, nil
	case codeLate:
		return res, 0, false, ErrLate
	case codeStale:
		return res, 0, false, store.ErrStale
	}
	outcome := store.Outcome(code)
	if code == codeKeyMismatch {
		outcome = store.KeyMismatch
	} else if code < codeRotated || code > codeRevoked {
		outcome = 0
	}
	if outcome == 0 || len(reply) != 8 {
		return res, 0, false, fmt.Errorf("unexpected reply %v", reply)
	}
	res = store.RotateResult{Outcome: outcome}
	rec, _ := reply[2].(string)
	if res.Parent, err = decodeToken(parent, sid, rec); err != nil {
		return res, 0, false, err
	}
	pttl, _ = reply[4].(int64)
	sf, ok := reply[1].([]any)
	switch {
	case ok:
		sm, err := flatMap(sf)
		if err != nil {
			return res, 0, false, err
		}
		claims, _ := reply[5].(string)
		if res.Session, err = decodeSession(sid, sm, claims); err != nil {
			return res, 0, false, err
		}
		fed = sm["fed"] == "1"
	case want != nil && code == codeRotated:
		// Rotated from a current snapshot: the session is the snapshot's,
		// as the script changed it (store.SnapshotRotator).
		res.Session = want.Session
		res.Session.Generation = res.Parent.Generation + 1
		if res.Session.JKT == "" {
			res.Session.JKT = jkt
		}
		return res, pttl, false, nil
	default:
		return res, 0, false, fmt.Errorf("unexpected reply %v", reply)
	}
	if sealed, ok := reply[3].(string); ok && code == codeReplayed {
		res.Sealed = []byte(sealed)
	}
	return res, pttl, fed, nil
}

func decodeSession(sid string, m map[string]string, claims string) (store.Session, error) {
	s := store.Session{ID: sid, Subject: m["sub"]}
	if c := claims; c != "" {
		s.Claims = json.RawMessage(c)
	}
	var errs []error
	var err error
	s.CreatedAt, err = decodeTime(m["created"])
	errs = append(errs, err)
	s.ExpiresAt, err = decodeTime(m["exp"])
	errs = append(errs, err)
	s.RevokedAt, err = decodeTime(m["rev"])
	errs = append(errs, err)
	idle, err := strconv.ParseInt(m["idle"], 10, 64)
	errs = append(errs, err)
	s.IdleTTL = time.Duration(idle)
	s.Generation, err = strconv.ParseUint(m["gen"], 10, 64)
	errs = append(errs, err)
	// Absent in sessions created before DPoP binding existed: unbound.
	s.JKT, s.Device = m["jkt"], m["dev"]
	if err := errors.Join(errs...); err != nil {
		return store.Session{}, fmt.Errorf("session %s: corrupt record: %w", sid, err)
	}
	return s, nil
}

func decodeToken(hash, sid, rec string) (store.Token, error) {
	f := strings.Split(rec, "|")
	if len(f) != 5 {
		return store.Token{}, fmt.Errorf("token of session %s: corrupt record %q", sid, rec)
	}
	t := store.Token{Hash: hash, SessionID: sid, ChildHash: f[4]}
	var errs []error
	var err error
	t.Generation, err = strconv.ParseUint(f[0], 10, 64)
	errs = append(errs, err)
	t.IssuedAt, err = decodeTime(f[1])
	errs = append(errs, err)
	t.ExpiresAt, err = decodeTime(f[2])
	errs = append(errs, err)
	t.RotatedAt, err = decodeTime(f[3])
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return store.Token{}, fmt.Errorf("token of session %s: corrupt record: %w", sid, err)
	}
	return t, nil
}
