package refresher_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokengate/tokengate/extauthz"
)

// Contract: extauthz's feed consumer, pointed at this refresher over real
// HTTP, denies a session once it is revoked here, and not before.
func TestRevocationFeedContract(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	kept := rg.startSession("").str("session_id")
	gone := rg.startSession("").str("session_id")
	feed, err := extauthz.NewRevocationFeed(extauthz.RevocationFeedConfig{
		URL: rg.http.URL, AdminToken: adminToken, Clock: rg.clock.Now, Wait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-feed.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("the feed never completed its first load")
	}
	if feed.Revoked(gone) {
		t.Fatal("denied before revocation")
	}
	if r := rg.admin("DELETE", "/v1/sessions/"+gone, ""); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !feed.Revoked(gone) { // the consumer's long poll delivers asynchronously
		if time.Now().After(deadline) {
			t.Fatal("the revoked session was not denied within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if feed.Revoked(kept) {
		t.Error("an active session is denied")
	}
	rg.clock.Advance(15*time.Minute + time.Second) // past until: its access tokens have expired
	if feed.Revoked(gone) {
		t.Error("still denied after until")
	}
}

// Contract: the bytes of the feed. extauthz decodes them with the same
// type (internal/revocationfeed), so this pins the JSON itself: field
// names, the RFC 3339 UTC until, an empty list as [] (not null).
func TestRevocationFeedBytes(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	sid := rg.startSession("").str("session_id")
	if r := rg.admin("DELETE", "/v1/sessions/"+sid, ""); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	first := rg.admin("GET", "/v1/revocations?wait=0", "")
	cursor := first.str("cursor")
	until := rg.clock.Now().Add(15 * time.Minute).UTC().Format(time.RFC3339Nano)
	want := `{"cursor":"` + cursor + `","revoked":[{"sid":"` + sid + `","until":"` + until + `"}]}` + "\n"
	if first.Raw != want {
		t.Errorf("feed body\n got %s\nwant %s", first.Raw, want)
	}
	empty := rg.admin("GET", "/v1/revocations?wait=0&after="+cursor, "")
	if want := `{"cursor":"` + cursor + `","revoked":[]}` + "\n"; empty.Raw != want {
		t.Errorf("empty feed body\n got %s\nwant %s", empty.Raw, want)
	}
}
