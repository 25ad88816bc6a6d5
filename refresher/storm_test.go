package refresher_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/fakeclock"

	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/boltstore"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// Storm: 500 goroutines refresh one token at once over real HTTP. Exactly one
// rotation happens, all 500 get the same refresh token, nobody is rate
// limited, and the session stays active.
func TestStorm(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"memory", "bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			storm(t, openStore(t, kind))
		})
	}
}

func storm(t *testing.T, st store.Store) {
	const n = 500
	rg := newRig(t, withStore(st))
	first := rg.startSession("")
	tok, sid := first.str("refresh_token"), first.str("session_id")
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}}.Encode()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
	defer client.CloseIdleConnections()
	start := make(chan struct{})
	got := make([]string, n)
	errs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(context.Background(), "POST", rg.http.URL+"/v1/token", strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			<-start
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			if resp.StatusCode != http.StatusOK {
				errs[i] = resp.Status + " " + buf.String()
				return
			}
			got[i] = extract(buf.String(), "refresh_token")
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != "" {
			t.Fatalf("request %d: %s", i, errs[i])
		}
		if got[i] != got[0] || got[i] == "" {
			t.Fatalf("request %d got a different refresh token", i)
		}
	}
	if got[0] == tok {
		t.Fatal("the storm got the old token back")
	}
	if r := rg.counter("tokengate_refresher_rotations_total"); r != 1 {
		t.Errorf("rotations = %v, want exactly 1", r)
	}
	if r := rg.counter("tokengate_refresher_replays_total"); r != n-1 {
		t.Errorf("replays = %v, want %d", r, n-1)
	}
	s := rg.session(sid)
	if !s.Active(rg.clock.Now()) || s.Generation != 1 {
		t.Errorf("session after the storm: active=%v generation=%d; want active, generation 1", s.Active(rg.clock.Now()), s.Generation)
	}
	if next := rg.refresh(got[0]); next.Status != http.StatusOK {
		t.Errorf("the converged token does not refresh: %d %s", next.Status, next.Raw)
	}
}

func extract(raw, field string) string {
	var r response
	_ = jsonUnmarshal(raw, &r.Body)
	return r.str(field)
}

// A response lost on the way (the client never saw T1) is recovered by
// retrying with T0 inside the grace window: the same T1 comes back. Retrying
// after the window is reuse: the session is revoked and its newest token
// fails too.
func TestLostResponseThenReuse(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	first := rg.startSession("")
	t0, sid := first.str("refresh_token"), first.str("session_id")

	lost := rg.refresh(t0) // the answer never reaches the client
	rg.clock.Advance(5 * time.Second)
	retry := rg.refresh(t0)
	if retry.Status != http.StatusOK || retry.str("refresh_token") != lost.str("refresh_token") {
		t.Fatalf("retry inside grace = %d %s; want the lost answer's refresh token", retry.Status, retry.Raw)
	}
	if rg.counter("tokengate_refresher_rotations_total") != 1 {
		t.Errorf("the retry rotated again")
	}

	rg.clock.Advance(time.Minute)
	reuse := rg.refresh(t0)
	if reuse.Status != http.StatusBadRequest || reuse.str("error") != "invalid_grant" {
		t.Fatalf("reuse after grace = %d %s; want invalid_grant", reuse.Status, reuse.Raw)
	}
	if rg.session(sid).RevokedAt.IsZero() {
		t.Fatal("reuse did not revoke the session")
	}
	if newest := rg.refresh(lost.str("refresh_token")); newest.str("error") != "invalid_grant" {
		t.Errorf("newest token after reuse = %d %s; want invalid_grant", newest.Status, newest.Raw)
	}
	logs := rg.logs.String()
	for _, want := range []string{`"msg":"refresh token reuse detected"`, `"sid":"` + sid + `"`, `"sub":"alice"`, `"client_ip":"127.0.0.1"`, `"user_agent":"Go-http-client/1.1"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, t0) || strings.Contains(logs, lost.str("refresh_token")) || strings.Contains(logs, lost.str("access_token")) {
		t.Error("a token value was logged")
	}
	if rg.counter("tokengate_refresher_reuse_detections_total") != 1 {
		t.Error("reuse detection not counted")
	}
	revs := rg.admin("GET", "/v1/revocations?wait=0", "")
	if !strings.Contains(revs.Raw, sid) {
		t.Errorf("revocation feed lacks the session: %s", revs.Raw)
	}
}

// A second replica (its own LRU, same store) replays the pair the first one
// issued: the store keeps it sealed for the grace window.
func TestReplayAcrossReplicas(t *testing.T) {
	t.Parallel()
	st := memstore.New()
	keys := generateKeys(t)
	clock := fakeclock.New()
	a := newRig(t, withStore(st), withKeys(keys), withClock(clock))
	b := newRig(t, withStore(st), withKeys(keys), withClock(clock))
	t0 := a.startSession("").str("refresh_token")
	fromA := a.refresh(t0)
	clock.Advance(2 * time.Second)
	fromB := b.refresh(t0)
	if fromB.Status != http.StatusOK || fromB.str("refresh_token") != fromA.str("refresh_token") {
		t.Fatalf("replica B = %d %s; want replica A's refresh token", fromB.Status, fromB.Raw)
	}
	if b.counter("tokengate_refresher_replays_total", "source", "store") != 1 {
		t.Error("replica B's replay not counted as a store replay")
	}
}

// A dump of the store reveals no usable token: refresh tokens are stored as
// hashes and the issued pair is sealed under a key only the parent's holder
// can derive.
func TestStoreDumpHoldsNoTokens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokengate.db")
	st, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	rg := newRig(t, withStore(st))
	first := rg.startSession("")
	next := rg.refresh(first.str("refresh_token"))
	if next.Status != http.StatusOK {
		t.Fatal(next.Raw)
	}
	st.Close()
	dump, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{
		"first refresh token": first.str("refresh_token"), "child refresh token": next.str("refresh_token"),
		"child access token": next.str("access_token"),
		"refresh token body": strings.TrimPrefix(next.str("refresh_token"), "tgr1_"),
	} {
		if bytes.Contains(dump, []byte(secret)) {
			t.Errorf("the store file contains the %s", name)
		}
	}
}
