package refresher_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// lostReplyStore applies a rotation but loses its answer while lose is set,
// as a Redis that ran the script and then stalled before replying: the
// store has rotated, the issuer sees a timeout.
type lostReplyStore struct {
	store.Store
	lose atomic.Bool
}

func (s *lostReplyStore) Rotate(ctx context.Context, req store.RotateRequest) (store.RotateResult, error) {
	res, err := s.Store.Rotate(ctx, req)
	if s.lose.Load() {
		return store.RotateResult{}, errors.Join(context.DeadlineExceeded, errors.New("reply lost"))
	}
	return res, err
}

// TestUnacknowledgedRotationIsNotReuse: a rotation the store applied but
// whose answer never reached the issuer (answered 503) must not make the
// client's retry reuse, even when the retry comes long after the grace
// window (the store stalled that long): the retry gets the pair the lost
// rotation issued, and the session goes on. Presenting the old token again
// after that is reuse as usual.
func TestUnacknowledgedRotationIsNotReuse(t *testing.T) {
	t.Parallel()
	st := &lostReplyStore{Store: memstore.New()}
	rg := newRig(t, withStore(st))
	t0 := rg.startSession("").str("refresh_token")

	st.lose.Store(true)
	if r := rg.refresh(t0); r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("refresh with the reply lost = %d %s, want 503 with Retry-After", r.Status, r.Raw)
	}
	st.lose.Store(false)
	rg.clock.Advance(5 * time.Minute) // the stall: far beyond the 30 s grace

	r1 := rg.refresh(t0)
	if r1.Status != http.StatusOK {
		t.Fatalf("retry after the stall = %d %s, want 200", r1.Status, r1.Raw)
	}
	t1 := r1.str("refresh_token")
	if again := rg.refresh(t0); again.Status != http.StatusOK || again.str("refresh_token") != t1 {
		t.Errorf("second retry at once = %d %s, want the same pair", again.Status, again.Raw)
	}
	r2 := rg.refresh(t1)
	if r2.Status != http.StatusOK {
		t.Fatalf("refresh of the recovered token = %d %s, want 200", r2.Status, r2.Raw)
	}
	if sid := r2.str("session_id"); !rg.session(sid).RevokedAt.IsZero() {
		t.Fatal("session revoked")
	}

	// The old token once more, long after: reuse, as for any rotated token.
	rg.clock.Advance(time.Minute)
	if r := rg.refresh(t0); r.Status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
		t.Errorf("old token after recovery = %d %s, want invalid_grant", r.Status, r.Raw)
	}
}
