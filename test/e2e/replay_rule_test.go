package e2e

import (
	"net/http"
	"testing"

	"github.com/tokengate/tokengate/internal/proctest"
)

// TestGrandparentRefusedAcrossReplicas is the cross-replica reuse sequence
// (only the immediate parent of the session's current token may replay), with two refresher processes on one real Redis and the
// default 30 s grace window (every step below is inside it):
//
//	RT0 rotated on A (→ RT1), RT1 rotated on B (→ RT2), RT0 presented on A.
//
// RT0 is no longer the parent of the session's current token, so it is
// reuse whatever A remembers: the session is revoked and every token of it
// is refused on both replicas. (A answering from its own memory would hand
// out RT1, whose replay yields the live RT2 pair.)
func TestGrandparentRefusedAcrossReplicas(t *testing.T) {
	redis := proctest.StartRedis(t)
	key := signingKey(t)
	a := startRefresher(t, "refresher-a", redis.Addr, key)
	b := startRefresher(t, "refresher-b", redis.Addr, key)

	rt0 := createSession(t, a, "grandparent-user").RefreshToken
	rt1 := refresh(a, rt0)
	if rt1.Status != http.StatusOK {
		t.Fatalf("RT0 on A: %v", rt1)
	}
	rt2 := refresh(b, rt1.Body.RefreshToken)
	if rt2.Status != http.StatusOK || rt2.Body.RefreshToken == rt1.Body.RefreshToken {
		t.Fatalf("RT1 on B: %v", rt2)
	}

	stolen := refresh(a, rt0)
	if stolen.Status != http.StatusBadRequest || stolen.Body.Error != "invalid_grant" {
		t.Fatalf("grandparent RT0 on A = %v (got RT1: %v, got RT2: %v); want 400 invalid_grant (reuse)",
			stolen, stolen.Body.RefreshToken == rt1.Body.RefreshToken, stolen.Body.RefreshToken == rt2.Body.RefreshToken)
	}
	if got := metric(t, a.URL, "tokengate_refresher_reuse_detections_total"); got != 1 {
		t.Errorf("reuse detections on A = %v, want 1", got)
	}
	for _, r := range []replica{a, b} {
		for name, tok := range map[string]string{"RT1": rt1.Body.RefreshToken, "RT2": rt2.Body.RefreshToken} {
			if ans := refresh(r, tok); ans.Status != http.StatusBadRequest || ans.Body.Error != "invalid_grant" {
				t.Errorf("%s on %s after the reuse = %v, want 400 invalid_grant", name, r.Name, ans)
			}
		}
	}
	if f := readFeed(t, b, ""); len(f.Revoked) != 1 {
		t.Errorf("feed = %+v, want the one revoked session", f.Revoked)
	}
}

// TestRevokedOnOtherReplicaNotReplayed: a session signed out on B is not
// replayed by A from its memory of a rotation inside the grace window.
func TestRevokedOnOtherReplicaNotReplayed(t *testing.T) {
	redis := proctest.StartRedis(t)
	key := signingKey(t)
	a := startRefresher(t, "refresher-a", redis.Addr, key)
	b := startRefresher(t, "refresher-b", redis.Addr, key)

	rt0 := createSession(t, a, "signed-out-user").RefreshToken
	rt1 := refresh(a, rt0)
	if rt1.Status != http.StatusOK {
		t.Fatalf("RT0 on A: %v", rt1)
	}
	if ans := revoke(b, rt1.Body.RefreshToken); ans.Status != http.StatusOK {
		t.Fatalf("sign-out on B: %v", ans)
	}
	if ans := refresh(a, rt0); ans.Status != http.StatusBadRequest || ans.Body.Error != "invalid_grant" {
		t.Fatalf("RT0 on A after sign-out on B = %v, want 400 invalid_grant", ans)
	}
}
