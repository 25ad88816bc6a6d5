package refresher

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/tokengate/tokengate/internal/revocationfeed"
)

// defaultRevocationsWait is the long-poll wait when the client names none:
// below the 30 s idle timeout common in proxies and load balancers.
const defaultRevocationsWait = 25 * time.Second

// Revocation is one entry of the revocation feed: every access token of
// session SessionID is invalid until Until, when the last of them expires.
// Its JSON is defined once, in internal/revocationfeed, which extauthz
// decodes with.
type Revocation = revocationfeed.Entry

// Revocations returns the feed entries after cursor that still matter (their
// until is in the future), waiting up to wait for one when there are none.
func (i *Issuer) Revocations(ctx context.Context, cursor string, wait time.Duration) ([]Revocation, string, error) {
	start := time.Now()
	revs, next, err := i.store.Revocations(ctx, cursor, i.now(), wait)
	// Latency of a long poll is mostly waiting, so only failures are recorded.
	if err != nil {
		i.metrics.observeStore("revocations", start, err)
		return nil, "", unavailable("revocations", err)
	}
	out := make([]Revocation, 0, len(revs))
	for _, r := range revs {
		out = append(out, Revocation{SessionID: r.SessionID, Until: r.Until.UTC()})
	}
	return out, next, nil
}

// parseWait reads the wait query parameter: a Go duration ("10s") or whole
// seconds ("10"); capped at max.
func parseWait(v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		return min(defaultRevocationsWait, max), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, invalidRequest("wait: must be a duration like 20s or whole seconds, got %q", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, invalidRequest("wait: must not be negative")
	}
	return min(d, max), nil
}

func (s *Server) handleRevocations(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r.URL.Query().Get("wait"), s.cfg.RevocationsMaxWait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.drain:
			cancel()
		case <-ctx.Done():
		}
	}()
	revs, cursor, err := s.issuer.Revocations(ctx, r.URL.Query().Get("after"), wait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, r, http.StatusOK, revocationfeed.Page{Cursor: cursor, Revoked: revs})
}
