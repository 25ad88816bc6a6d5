package refresher

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tokengate/tokengate/refresher/store"
)

// unacked remembers the rotations this replica asked the store for whose
// answer it never got (the store call failed, the client was answered
// 503). The store may still have applied one — Redis ran the script and
// stalled before replying — and then records the parent as rotated, at the
// request's time, into a child only this replica ever saw. The client's
// retry can come long after that (the stall's length), beyond the grace
// window, and would be judged reuse. When the store shows the parent
// rotated into exactly the child remembered here, nobody can hold that
// child but the retrying client, so the retry is decided as of the lost
// attempt: the store replays (and, on Cluster, re-indexes the child) and
// the client gets the pair that attempt minted. The grace window of that
// pair then starts when it is delivered (the recent pairs).
//
// Only this replica knows its lost attempts: a retry that another replica
// answers is decided by the store alone (see docs/operations.md, "Redis
// under faults"). Entries hold the pair sealed under the parent token, as
// the recent pairs do, so memory holds no usable token; the LRU is bounded
// by Config.RecentSize entries and filled only by failed store calls.
type unacked struct {
	lru *lru.Cache[string, unackedEntry]
}

type unackedEntry struct {
	childHash string
	sealed    []byte
}

func newUnacked(size int) *unacked {
	c, err := lru.New[string, unackedEntry](size)
	if err != nil {
		// Only a non-positive size, which Config.Validate refuses.
		panic(err)
	}
	return &unacked{lru: c}
}

// add records a rotation of parentHash into childHash whose answer was lost.
func (u *unacked) add(parentHash, childHash string, sealed []byte) {
	u.lru.Add(parentHash, unackedEntry{childHash: childHash, sealed: sealed})
}

// match returns the sealed pair of a lost rotation of parentHash, if the
// store's record of the parent shows that this rotation took place.
func (u *unacked) match(parentHash string, parent store.Token) ([]byte, bool) {
	e, ok := u.lru.Peek(parentHash)
	if !ok || parent.RotatedAt.IsZero() || parent.ChildHash != e.childHash {
		return nil, false
	}
	return e.sealed, true
}

// remove forgets parentHash once the store has answered for it.
func (u *unacked) remove(parentHash string) { u.lru.Remove(parentHash) }
