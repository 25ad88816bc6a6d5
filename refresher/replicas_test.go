package refresher_test

import (
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/refresher"
)

// Two replicas (each with its own LRU of recent pairs) on one store, one
// clock: a replica's memory never overrules the store on who may replay.
// The e2e package runs the grandparent sequence with two processes on a real
// Redis (test/e2e/replay_rule_test.go); this is the same rule on every
// backend, in process.
func TestReplayRuleAcrossReplicas(t *testing.T) {
	t.Parallel()
	type step struct {
		on, present string // replica "A" or "B"; "T0" or an earlier step's name
		advance     time.Duration
		revoke      bool // sign out with the presented token instead of refreshing
		status      int
		sameAs      string // the answer's refresh token equals this step's
	}
	tests := []struct {
		name  string
		steps []step
		// revoked: the session is revoked at the end, and every token of it
		// is refused on both replicas.
		revoked bool
	}{
		{"grandparent on the replica that rotated it is reuse", []step{
			{on: "A", present: "T0", status: 200},
			{on: "B", present: "r0", advance: time.Second, status: 200},
			{on: "A", present: "T0", advance: time.Second, status: 400},
		}, true},
		{"grandparent after a legitimate cross-replica replay is reuse", []step{
			{on: "A", present: "T0", status: 200},
			{on: "B", present: "r0", advance: time.Second, status: 200},
			{on: "A", present: "r0", status: 200, sameAs: "r1"},
			{on: "A", present: "T0", status: 400},
		}, true},
		{"immediate parent replays on the replica that did not rotate it", []step{
			{on: "A", present: "T0", status: 200},
			{on: "B", present: "r0", advance: time.Second, status: 200},
			{on: "A", present: "r0", advance: time.Second, status: 200, sameAs: "r1"},
			{on: "B", present: "r0", status: 200, sameAs: "r1"},
		}, false},
		{"session signed out on B is not replayed by A", []step{
			{on: "A", present: "T0", status: 200},
			{on: "B", present: "r0", revoke: true, status: 200},
			{on: "A", present: "T0", status: 400},
		}, true},
	}
	for _, kind := range []string{"memory", "bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			st := openStore(t, kind)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					clock, keys := fakeclock.New(), generateKeys(t)
					// No rate limits: on Redis they are shared by the
					// replicas and run on Redis's clock, which the fake
					// clock does not move (limits: limiter_test.go).
					noLimits := withConfig(func(c *refresher.Config) { c.RateLimitIP, c.RateLimitSession = 0, 0 })
					rigs := map[string]*rig{
						"A": newRig(t, withStore(st), withKeys(keys), withClock(clock), noLimits),
						"B": newRig(t, withStore(st), withKeys(keys), withClock(clock), noLimits),
					}
					first := rigs["A"].startSession("")
					sid := first.str("session_id")
					tokens := map[string]string{"T0": first.str("refresh_token")}
					for i, s := range tc.steps {
						name := "r" + string(rune('0'+i))
						clock.Advance(s.advance)
						rg := rigs[s.on]
						var got response
						if s.revoke {
							got = rg.do(rg.request("POST", "/v1/revoke", "application/x-www-form-urlencoded", "token="+tokens[s.present]))
						} else {
							got = rg.refresh(tokens[s.present])
						}
						if got.Status != s.status {
							t.Fatalf("step %s (%s on %s): %d %s; want %d", name, s.present, s.on, got.Status, got.Raw, s.status)
						}
						if s.status == 400 && got.str("error") != "invalid_grant" {
							t.Fatalf("step %s: %s; want invalid_grant", name, got.Raw)
						}
						if s.sameAs != "" && got.str("refresh_token") != tokens[s.sameAs] {
							t.Fatalf("step %s: refresh token differs from step %s's", name, s.sameAs)
						}
						if rt := got.str("refresh_token"); rt != "" {
							tokens[name] = rt
						}
					}
					if revoked := !rigs["A"].session(sid).RevokedAt.IsZero(); revoked != tc.revoked {
						t.Fatalf("session revoked = %v, want %v", revoked, tc.revoked)
					}
					if !tc.revoked {
						return
					}
					for on, rg := range rigs {
						for name, tok := range tokens {
							if got := rg.refresh(tok); got.str("error") != "invalid_grant" {
								t.Errorf("%s on %s after revocation: %d %s; want invalid_grant", name, on, got.Status, got.Raw)
							}
						}
					}
				})
			}
		})
	}
}
