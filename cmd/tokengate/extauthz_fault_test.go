package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/internal/proctest"
)

// The extauthz fault suite: `tokengate extauthz` as a process, its
// dependencies (the refresher's JWKS and revocation feed) behind a proxy
// in the test that can make one path down (connections cut), hanging
// (requests held open) or up (passed through to a real refresher process).

type faultMode int32

const (
	faultUp   faultMode = iota
	faultDown           // the connection is cut before any answer
	faultHang           // the request is held until the mode changes
)

// faultProxy forwards to target; requests whose path has prefix suffer mode.
type faultProxy struct {
	*httptest.Server
	prefix string
	mu     sync.Mutex
	mode   faultMode
	change chan struct{} // closed when mode changes
	// faulted receives the path of each request that met a fault.
	faulted chan string
	hits    atomic.Int64 // requests under prefix, whatever the mode
	// requests receives the path of each request under prefix.
	requests chan string
}

func newFaultProxy(t *testing.T, target, prefix string, mode faultMode) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	// A client that gives up (a feed request timing out) is expected here.
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	fp := &faultProxy{prefix: prefix, mode: mode, change: make(chan struct{}), faulted: make(chan string, 10000), requests: make(chan string, 10000)}
	fp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, fp.prefix) {
			fp.hits.Add(1)
			select {
			case fp.requests <- r.URL.Path:
			default:
			}
			for {
				fp.mu.Lock()
				mode, change := fp.mode, fp.change
				fp.mu.Unlock()
				if mode == faultUp {
					break
				}
				select {
				case fp.faulted <- r.URL.Path:
				default:
				}
				if mode == faultDown {
					if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
						c.Close()
					}
					return
				}
				select { // faultHang
				case <-change:
				case <-r.Context().Done():
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(fp.Close)
	return fp
}

func (fp *faultProxy) set(mode faultMode) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.mode = mode
	close(fp.change)
	fp.change = make(chan struct{})
}

// awaitFault waits until n more requests met the fault.
func (fp *faultProxy) awaitFault(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-fp.faulted:
		case <-time.After(30 * time.Second):
			t.Fatalf("no request reached the faulty %s", fp.prefix)
		}
	}
}

// startExtauthzProc starts `tokengate extauthz` with args on free loopback
// ports and returns it with its HTTP base URL and a gRPC client.
func startExtauthzProc(t *testing.T, env []string, args ...string) (*proctest.Process, string, authv3.AuthorizationClient) {
	t.Helper()
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	p := proctest.Start(t, "extauthz", env, proctest.Tokengate(t),
		append([]string{"extauthz", "--grpc-listen", grpcAddr, "--http-listen", httpAddr}, args...)...)
	p.WaitTCP(t, grpcAddr, 20*time.Second)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, "http://" + httpAddr, authv3.NewAuthorizationClient(conn)
}

// checkWord is a gRPC Check's outcome in one word: "allow", the denial's
// error, or the gRPC code of an error (Envoy's ext_authz timeout is 200ms
// by default: the context here is as generous as the examples' 0.5s).
func checkWord(c authv3.AuthorizationClient, token string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.test", Path: "/api/x",
			Headers: map[string]string{"authorization": "Bearer " + token}},
	}}})
	if err != nil {
		return status.Code(err).String()
	}
	if resp.GetOkResponse() != nil {
		return "allow"
	}
	var body struct{ Error string }
	_ = json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body)
	return body.Error
}

// waitReadyzReasons polls /readyz until its reasons are exactly want
// (start-up only: the keys load while the feed stays down).
func waitReadyzReasons(t *testing.T, p *proctest.Process, base string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		resp, err := testClient.Get(base + "/readyz")
		if err == nil {
			var body struct{ Reasons []string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			last = strings.Join(body.Reasons, "; ")
			if last == strings.Join(want, "; ") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz reasons %q, want %q\n%s", last, want, p.Output())
		}
		select {
		case <-p.Done():
			t.Fatalf("extauthz exited:\n%s", p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestExtauthzFaultFeedDownAtStart: extauthz starts while the revocation
// feed is down, then hanging. A token of a session revoked before it
// started is never allowed — over gRPC it gets UNAVAILABLE, over
// forward-auth 503 with Retry-After — and once the feed comes up it is
// token_revoked while a live session is allowed. With
// --revocations-fail-open the old behaviour is back, on purpose. Then the
// feed goes down again after it synced: the last list is kept.
func TestExtauthzFaultFeedDownAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, base := startRefresher(t, dir)
	admin := readAdminToken(t, dir)
	session := func() pairJSON {
		t.Helper()
		status, p, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"alice"}`)
		if status != http.StatusCreated {
			t.Fatalf("POST /v1/sessions = %d", status)
		}
		return p
	}
	revoked, live := session(), session()
	if status, _, _ := postJSON(t, "DELETE", base+"/v1/sessions/"+revoked.SessionID, admin, "", ""); status/100 != 2 {
		t.Fatalf("DELETE /v1/sessions = %d", status)
	}

	feed := newFaultProxy(t, base, "/v1/revocations", faultDown)
	env := []string{"TOKENGATE_ADMIN_TOKEN=" + admin}
	common := []string{"--jwks-url", feed.URL + "/.well-known/jwks.json", "--issuer", "https://auth.test",
		"--audience", "api", "--revocations-url", feed.URL}
	p, authzURL, authz := startExtauthzProc(t, env, common...)
	// The keys load; the feed keeps it not ready.
	waitReadyzReasons(t, p, authzURL, "revocation feed not ready")

	// A client hammers the revoked token for the whole outage.
	var mu sync.Mutex
	seen := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var hammered atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			w := checkWord(authz, revoked.AccessToken)
			mu.Lock()
			seen[w]++
			mu.Unlock()
			hammered.Add(1)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	forwardAuth := func(token string) (int, http.Header) {
		t.Helper()
		status, _, hdr := postJSON(t, "GET", authzURL+"/authz/api/x", token, "", "")
		return status, hdr
	}
	assertUnavailable := func(phase string) {
		t.Helper()
		for name, tok := range map[string]string{"revoked": revoked.AccessToken, "live": live.AccessToken} {
			if w := checkWord(authz, tok); w != codes.Unavailable.String() {
				t.Fatalf("feed %s: gRPC Check of the %s session = %s, want Unavailable", phase, name, w)
			}
			if status, hdr := forwardAuth(tok); status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
				t.Fatalf("feed %s: forward-auth of the %s session = %d %v, want 503 with Retry-After", phase, name, status, hdr)
			}
		}
	}
	feed.awaitFault(t, 2)
	assertUnavailable("down")
	feed.set(faultHang)
	feed.awaitFault(t, 1) // a feed request is now held open
	assertUnavailable("hanging")

	// A second extauthz with --revocations-fail-open: allowed, not ready.
	p2, authz2URL, authz2 := startExtauthzProc(t, env, append(common, "--revocations-fail-open")...)
	waitReadyzReasons(t, p2, authz2URL, "revocation feed not ready")
	if w := checkWord(authz2, revoked.AccessToken); w != "allow" {
		t.Fatalf("--revocations-fail-open before the feed synced: %s, want allow", w)
	}

	feed.set(faultUp)
	p.WaitHTTP(t, authzURL+"/readyz", http.StatusOK, 30*time.Second)
	close(stop)
	wg.Wait()
	if w := checkWord(authz, revoked.AccessToken); w != "token_revoked" {
		t.Fatalf("after the feed came up: revoked session = %s", w)
	}
	if w := checkWord(authz, live.AccessToken); w != "allow" {
		t.Fatalf("after the feed came up: live session = %s", w)
	}
	p2.WaitHTTP(t, authz2URL+"/readyz", http.StatusOK, 30*time.Second)
	if w := checkWord(authz2, revoked.AccessToken); w != "token_revoked" {
		t.Fatalf("fail-open extauthz after the feed came up: %s", w)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["allow"] != 0 || len(seen) > 2 || seen[codes.Unavailable.String()] == 0 {
		t.Fatalf("outcomes of the revoked token during the outage: %v; want only Unavailable (and token_revoked once synced)", seen)
	}
	metrics := get(t, authzURL+"/metrics")
	if !strings.Contains(metrics, `tokengate_extauthz_checks_total{decision="error",reason="revocations_unavailable"}`) {
		t.Errorf("no revocations_unavailable series in /metrics")
	}
	t.Logf("revoked token checked %d times during the outage: %v", hammered.Load(), seen)

	// The feed goes down after it synced: the last list is kept and extauthz
	// stays ready; a session revoked meanwhile is still allowed (the
	// documented gap, bounded by the access-token lifetime) until the feed
	// answers again. The long poll in flight is cut too.
	feed.set(faultDown)
	feed.CloseClientConnections()
	feed.awaitFault(t, 1)
	if status, _, _ := postJSON(t, "DELETE", base+"/v1/sessions/"+live.SessionID, admin, "", ""); status/100 != 2 {
		t.Fatalf("DELETE /v1/sessions = %d", status)
	}
	if w := checkWord(authz, revoked.AccessToken); w != "token_revoked" {
		t.Fatalf("feed down after sync: the session revoked before = %s, want token_revoked (list kept)", w)
	}
	if w := checkWord(authz, live.AccessToken); w != "allow" {
		t.Fatalf("feed down after sync: the session revoked during the outage = %s, want allow (the documented gap)", w)
	}
	if status, _, _ := postJSON(t, "GET", authzURL+"/readyz", "", "", ""); status != http.StatusOK {
		t.Fatalf("/readyz during an outage after sync = %d, want 200", status)
	}
	feed.set(faultUp)
	recovered := time.Now()
	waitFor(t, func() bool { return checkWord(authz, live.AccessToken) == "token_revoked" })
	t.Logf("feed down after sync: the session revoked during the outage was token_revoked %v after the feed came back",
		time.Since(recovered).Round(time.Millisecond))
}

// junkToken is a well-formed ES256 token for the refresher's issuer and
// audience whose kid names no published key: what an attacker sends to
// make extauthz refetch the JWKS.
func junkToken(t *testing.T, key jwk.Key, kid string) string {
	t.Helper()
	now := time.Now()
	payload, err := json.Marshal(map[string]any{"iss": "https://auth.test", "aud": "api", "sub": "mallory", "sid": "junk",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	// The key's own kid would win over the header's: a clone names this one.
	key, err = key.Clone()
	if err != nil {
		t.Fatal(err)
	}
	key.Set(jwk.KeyIDKey, kid)
	hdr := jws.NewHeaders()
	hdr.Set(jws.TypeKey, "at+jwt")
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// timedCheck is checkWord with the time the answer took.
func timedCheck(c authv3.AuthorizationClient, token string) (string, time.Duration) {
	start := time.Now()
	w := checkWord(c, token)
	return w, time.Since(start)
}

// TestExtauthzFaultKeyRollover: the refresher rolls its signing key over
// (SIGHUP: the new key signs and is published at once) while an attacker
// sends a token with a new junk kid every 20ms. The new key's tokens are
// never invalid_token (a client would sign its user out) and are allowed
// within a small bound; junk is never allowed. Then the JWKS hangs during
// a second rollover: checks with the unknown kid answer UNAVAILABLE within
// a short bound (kid_refetch_wait, 100ms, not the 10s fetch timeout), and
// once the JWKS answers, the key is in.
func TestExtauthzFaultKeyRollover(t *testing.T) {
	t.Parallel()
	began := time.Now()
	dir := t.TempDir()
	key1, key2, key3, mallory := genKey(t), genKey(t), genKey(t), genKey(t)
	keyFile := filepath.Join(dir, "keys.json")
	writeKeySet(t, keyFile, key1)
	admin := "0123456789abcdef0123456789"
	ref, base := startRefresher(t, dir, "--signing-key", keyFile, "--admin-token", admin)
	jwksProxy := newFaultProxy(t, base, "/.well-known/jwks.json", faultUp)
	p, authzURL, authz := startExtauthzProc(t, nil, "--jwks-url", jwksProxy.URL+"/.well-known/jwks.json",
		"--issuer", "https://auth.test", "--audience", "api")
	p.WaitHTTP(t, authzURL+"/readyz", http.StatusOK, 30*time.Second)
	signedBy := func(key jwk.Key) string {
		t.Helper()
		var tok string
		waitFor(t, func() bool {
			_, s, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"alice"}`)
			tok = s.AccessToken
			return headerKID(t, tok) == kidOf(key)
		})
		return tok
	}
	if w := checkWord(authz, signedBy(key1)); w != "allow" {
		t.Fatalf("first key: %s", w)
	}
	rollTo := func(next jwk.Key, keep ...jwk.Key) {
		t.Helper()
		writeKeySet(t, keyFile, append([]jwk.Key{next}, keep...)...)
		if err := ref.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// The attacker: a new junk kid every 20ms, for the whole test.
	var mu sync.Mutex
	junkSeen := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			w := checkWord(authz, junkToken(t, mallory, fmt.Sprintf("junk-%d", i)))
			mu.Lock()
			junkSeen[w]++
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if junkSeen["allow"] != 0 {
			t.Errorf("junk kids allowed: %v", junkSeen)
		}
		t.Logf("junk-kid checks: %v", junkSeen)
	}()

	t.Logf("%v: extauthz ready, attacker started", time.Since(began).Round(time.Millisecond))
	// Rollover 1 under junk kids, right after a junk kid made extauthz
	// fetch the JWKS (the case the old 30s limit turned into 29s of
	// invalid_token).
	for len(jwksProxy.requests) > 0 {
		<-jwksProxy.requests
	}
	select {
	case <-jwksProxy.requests:
	case <-time.After(30 * time.Second):
		t.Fatal("the junk kids caused no JWKS fetch")
	}
	fetchesBefore := jwksProxy.hits.Load()
	rollTo(key2, key1)
	tok2 := signedBy(key2)
	start := time.Now()
	outcomes := map[string]int{}
	for {
		w := checkWord(authz, tok2)
		outcomes[w]++
		if w == "allow" {
			break
		}
		if w != codes.Unavailable.String() {
			t.Fatalf("new key's token %v after its first check: %s; want allow or Unavailable (retry), never a sign-out", time.Since(start), w)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("new key's token not allowed within 10s: %v", outcomes)
		}
		time.Sleep(20 * time.Millisecond) // a client's retry pace
	}
	rollover := time.Since(start)
	t.Logf("rollover under junk kids: new key allowed %v after its first check (%v); %d JWKS fetches meanwhile",
		rollover.Round(time.Millisecond), outcomes, jwksProxy.hits.Load()-fetchesBefore)

	t.Logf("%v: rollover 1 done", time.Since(began).Round(time.Millisecond))
	// Rollover 2 while the JWKS hangs.
	jwksProxy.set(faultHang)
	rollTo(key3, key2)
	tok3 := signedBy(key3)
	// Wait for a fetch to be held by the hanging JWKS (the attacker's next
	// junk kid past the min gap starts one), then check during it.
	for len(jwksProxy.faulted) > 0 {
		<-jwksProxy.faulted
	}
	jwksProxy.awaitFault(t, 1)
	var slowest time.Duration
	for range 5 {
		w, took := timedCheck(authz, tok3)
		if w != codes.Unavailable.String() || took > 2*time.Second {
			t.Fatalf("unknown kid during a hanging JWKS: %s after %v, want Unavailable well within 2s", w, took)
		}
		slowest = max(slowest, took)
		time.Sleep(20 * time.Millisecond)
	}
	if w := checkWord(authz, tok2); w != "allow" {
		t.Fatalf("known key during the hanging JWKS: %s", w)
	}
	jwksProxy.set(faultUp)
	released := time.Now()
	waitFor(t, func() bool { return checkWord(authz, tok3) == "allow" })
	t.Logf("hanging JWKS: unknown-kid checks answered Unavailable in at most %v; the new key allowed %v after the JWKS answered; %d JWKS requests in all",
		slowest.Round(time.Millisecond), time.Since(released).Round(time.Millisecond), jwksProxy.hits.Load())
}

// TestExtauthzFaultKeyRemoval: the refresher takes a key out of its JWKS
// (SIGHUP with a key file that no longer lists it). extauthz, started with
// --jwks-refresh-max-interval 1s, refuses that key's token — cached by two
// allows before — at its next background refresh, and keeps allowing the
// remaining key.
func TestExtauthzFaultKeyRemoval(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key1, key2 := genKey(t), genKey(t)
	keyFile := filepath.Join(dir, "keys.json")
	writeKeySet(t, keyFile, key1, key2) // key1 signs; both published
	admin := "0123456789abcdef0123456789"
	ref, base := startRefresher(t, dir, "--signing-key", keyFile, "--admin-token", admin)
	p, authzURL, authz := startExtauthzProc(t, nil, "--jwks-url", base+"/.well-known/jwks.json",
		"--issuer", "https://auth.test", "--audience", "api", "--jwks-refresh-max-interval", "1s")
	p.WaitHTTP(t, authzURL+"/readyz", http.StatusOK, 30*time.Second)
	_, s1, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"alice"}`)
	if headerKID(t, s1.AccessToken) != kidOf(key1) {
		t.Fatal("the first key did not sign")
	}
	for range 2 {
		if w := checkWord(authz, s1.AccessToken); w != "allow" {
			t.Fatalf("before removal: %s", w)
		}
	}

	writeKeySet(t, keyFile, key2)
	if err := ref.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !strings.Contains(get(t, base+"/.well-known/jwks.json"), kidOf(key1)) })
	removed := time.Now()
	outcomes := map[string]int{}
	for {
		w := checkWord(authz, s1.AccessToken)
		outcomes[w]++
		if w == "invalid_token" {
			break
		}
		if w != "allow" || time.Since(removed) > 10*time.Second {
			t.Fatalf("removed key's token %v after removal: %s (outcomes %v)", time.Since(removed), w, outcomes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(removed)
	_, s2, _ := postJSON(t, "POST", base+"/v1/sessions", admin, "application/json", `{"sub":"bob"}`)
	if w := checkWord(authz, s2.AccessToken); headerKID(t, s2.AccessToken) != kidOf(key2) || w != "allow" {
		t.Fatalf("the remaining key's token: %s", w)
	}
	t.Logf("removed key refused %v after the JWKS dropped it (--jwks-refresh-max-interval 1s; %v)", took.Round(time.Millisecond), outcomes)
}
