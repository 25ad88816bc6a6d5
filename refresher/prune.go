package refresher

import (
	"context"
	"time"

	"github.com/tokengate/tokengate/refresher/store"
)

// PruneInterval is how often RunPruner prunes a store that needs it (bolt,
// memory). A bolt pass costs what it deletes (time-ordered indexes), so it
// runs often: sealed pairs leave the file within seconds of their grace
// window and the freed pages are reused, which keeps the file size flat
// (docs/operations.md, "Bolt file size").
const PruneInterval = 10 * time.Second

// RunPruner deletes the store's dead records every interval (PruneInterval
// when interval ≤ 0) until ctx ends, if the store is a store.Pruner; for
// other stores (Redis expires its own keys) it returns at once. "Now" is the
// server's clock, the one its rotations are decided with. A failed pass is
// logged and the next one tries again.
func (s *Server) RunPruner(ctx context.Context, interval time.Duration) {
	p, ok := s.store.(store.Pruner)
	if !ok {
		return
	}
	if interval <= 0 {
		interval = PruneInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.Prune(s.issuer.now()); err != nil {
				s.log.WarnContext(ctx, "store prune failed", "error", err.Error())
			}
		}
	}
}
