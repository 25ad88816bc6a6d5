package devmode

import (
	"context"
	"time"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/refresher/store"
)

// StoreDenylist is extauthz's revocation check in the one-process dev
// mode: it reads the session straight from the refresher's store (a bolt
// read, microseconds), so a sign-out is refused on the very next request.
type StoreDenylist struct{ Store store.Store }

var _ extauthz.Denylist = StoreDenylist{}

// Revoked reports whether the store has sid revoked.
func (d StoreDenylist) Revoked(sid string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := d.Store.GetSession(ctx, sid)
	return err == nil && !s.RevokedAt.IsZero()
}

// Ready reports whether the store answers.
func (d StoreDenylist) Ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return d.Store.Ping(ctx) == nil
}
