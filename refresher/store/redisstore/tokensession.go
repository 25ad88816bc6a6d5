package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/refresher/store"
)

var _ store.TokenSessionGetter = (*Store)(nil)

// GetTokenSession reads a refresh-token record and its session in one
// pipeline: one round trip once the token's session ID is known, which the
// in-process hash→session index gives for every token this replica issued
// or has looked up (otherwise one more round trip reads the index first).
func (s *Store) GetTokenSession(ctx context.Context, hash string) (store.Token, store.Session, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	sid, err := s.lookup(ctx, hash)
	if errors.Is(err, redis.Nil) {
		return store.Token{}, store.Session{}, store.ErrNotFound
	}
	if err != nil {
		return store.Token{}, store.Session{}, fmt.Errorf("redisstore: get token: %w", err)
	}
	var rec *redis.StringCmd
	var fields *redis.MapStringStringCmd
	var claims *redis.StringCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		rec = p.HGet(ctx, s.tokensKey(sid), hash)
		fields = p.HGetAll(ctx, s.sessionKey(sid))
		claims = p.Get(ctx, s.claimsKey(sid))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return store.Token{}, store.Session{}, fmt.Errorf("redisstore: get token and session: %w", err)
	}
	// Pipelined reports the first failed command only: a missing key (Nil)
	// may hide a later command's real error.
	for _, cmdErr := range []error{rec.Err(), fields.Err(), claims.Err()} {
		if cmdErr != nil && !errors.Is(cmdErr, redis.Nil) {
			return store.Token{}, store.Session{}, fmt.Errorf("redisstore: get token and session: %w", cmdErr)
		}
	}
	if errors.Is(rec.Err(), redis.Nil) {
		return store.Token{}, store.Session{}, store.ErrNotFound
	}
	tok, err := decodeToken(hash, sid, rec.Val())
	if err != nil {
		return store.Token{}, store.Session{}, err
	}
	if len(fields.Val()) == 0 {
		return tok, store.Session{}, nil
	}
	sess, err := decodeSession(sid, fields.Val(), claims.Val())
	if err != nil {
		return store.Token{}, store.Session{}, err
	}
	return tok, sess, nil
}
