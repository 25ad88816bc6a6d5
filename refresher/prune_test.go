package refresher_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// prunedStore is a memory store that hands each Prune's now to the test
// (until stop is closed) and fails its passes while fail is set.
type prunedStore struct {
	*memstore.Store
	calls chan time.Time
	stop  chan struct{}
	fail  atomic.Bool
}

func (s *prunedStore) Prune(now time.Time) error {
	err := s.Store.Prune(now)
	if s.fail.Load() {
		err = errors.New("disk on fire")
	}
	select {
	case s.calls <- now:
	case <-s.stop:
	}
	return err
}

// RunPruner prunes the store on the server's clock while it runs: a
// session past its absolute expiry is gone after a pass, a failed pass is
// logged and the loop goes on, and it stops when its context ends.
func TestRunPruner(t *testing.T) {
	t.Parallel()
	st := &prunedStore{Store: memstore.New(), calls: make(chan time.Time), stop: make(chan struct{})}
	rg := newRig(t, withStore(st))
	sid := rg.startSession("").str("session_id")
	rg.clock.Advance(25 * time.Hour) // past testConfig's 24 h session-max-age

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rg.srv.RunPruner(ctx, time.Millisecond)
	}()
	if now := <-st.calls; !now.Equal(rg.clock.Now()) {
		t.Errorf("Prune(%v); want the server's clock, %v", now, rg.clock.Now())
	}
	if _, err := rg.store.GetSession(context.Background(), sid); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session after a prune pass: %v; want ErrNotFound", err)
	}

	st.fail.Store(true)
	<-st.calls // a failing pass
	st.fail.Store(false)
	<-st.calls // the loop went on
	close(st.stop)
	cancel()
	<-done
	logs := rg.logs.String()
	if !strings.Contains(logs, `"level":"WARN","msg":"store prune failed","error":"disk on fire"`) {
		t.Errorf("failed pass not logged:\n%s", logs)
	}
}

// A store that expires its own records (not a store.Pruner, like Redis)
// gets no loop: RunPruner returns at once.
func TestRunPrunerWithoutPruner(t *testing.T) {
	t.Parallel()
	rg := newRig(t, withStore(&lostReplyStore{Store: memstore.New()}))
	rg.srv.RunPruner(context.Background(), time.Millisecond) // returns, or the test times out
}
