package redisstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/internal/proctest"
)

const stallAdminToken = "stall-admin-token-0123456789abcdef"

// stallHTTP is the refreshing clients' HTTP client: its timeout is far
// above the refresher's store timeout, so every answer is the refresher's.
var stallHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

// tokenAnswer is one answer of the refresher, decoded.
type tokenAnswer struct {
	Status       int
	RetryAfter   time.Duration
	RefreshToken string
	SessionID    string
	Error        string
	Err          error
}

func (a tokenAnswer) String() string {
	if a.Err != nil {
		return "transport error: " + a.Err.Error()
	}
	return fmt.Sprintf("%d %s", a.Status, a.Error)
}

func postJSONOrForm(req *http.Request) tokenAnswer {
	resp, err := stallHTTP.Do(req)
	if err != nil {
		return tokenAnswer{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	a := tokenAnswer{Status: resp.StatusCode, Err: err}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		a.RetryAfter = time.Duration(s) * time.Second
	}
	var v struct {
		RefreshToken string `json:"refresh_token"`
		SessionID    string `json:"session_id"`
		Error        string `json:"error"`
	}
	if err == nil {
		if err := json.Unmarshal(body, &v); err != nil {
			a.Err = fmt.Errorf("status %d, body %.200q: %w", resp.StatusCode, body, err)
		}
	}
	a.RefreshToken, a.SessionID, a.Error = v.RefreshToken, v.SessionID, v.Error
	return a
}

// TestStallLongerThanGrace pauses redis-server (SIGSTOP) for longer than
// the reuse-grace window while clients refresh through a real refresher
// process. Each client retries the token of a refresh answered 503 (after
// Retry-After), as the client library does. A rotation script the refresher
// gave up on stays queued in Redis and runs at SIGCONT; it must not turn
// the client's retry into reuse: no session is revoked, and every client
// refreshes again after the pause.
//
// The long variant (docs/operations.md, "Redis under faults") sets
// TOKENGATE_STALL_CLIENTS, TOKENGATE_STALL (the pause) and
// TOKENGATE_STALL_GRACE (--reuse-grace). TOKENGATE_STALL_REPLICAS=2 runs
// two refresher processes and sends each client's successive requests to
// them in turn, as a round-robin load balancer would; that measures the
// documented residual (a lost reply retried on the other replica) and
// only logs the count.
func TestStallLongerThanGrace(t *testing.T) {
	clients := envInt(t, "TOKENGATE_STALL_CLIENTS", 30)
	grace := envDuration(t, "TOKENGATE_STALL_GRACE", 2*time.Second)
	stall := envDuration(t, "TOKENGATE_STALL", 5*time.Second) // > grace + store timeout + Retry-After
	replicas := envInt(t, "TOKENGATE_STALL_REPLICAS", 1)
	r := proctest.StartRedis(t)
	t.Cleanup(func() { r.Proc.Signal(syscall.SIGCONT) })

	keyPath := proctest.SigningKeyFile(t)
	bases := make([]string, replicas)
	for n := range bases {
		port := proctest.FreePort(t)
		bases[n] = "http://127.0.0.1:" + strconv.Itoa(port)
		ref := proctest.Start(t, "refresher-"+strconv.Itoa(n), nil, proctest.Tokengate(t), "refresher",
			"--listen", "127.0.0.1:"+strconv.Itoa(port),
			"--store", "redis://"+r.Addr,
			"--signing-key", keyPath,
			"--issuer", "https://issuer.stall.test",
			"--audience", "stall",
			"--admin-token", stallAdminToken,
			"--rate-limit-ip", "0",
			"--rate-limit-session", "0",
			"--reuse-grace", grace.String(),
			"--redis-timeout", "500ms",
			"--store-timeout", "1s",
			"--log-level", "warn",
		)
		ref.WaitHTTP(t, bases[n]+"/readyz", http.StatusOK, 60*time.Second)
	}
	base := bases[0]

	tokens := make([]string, clients)
	sids := make([]string, clients)
	for i := range clients {
		body, _ := json.Marshal(map[string]any{"sub": "stall-user-" + strconv.Itoa(i)})
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/sessions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+stallAdminToken)
		req.Header.Set("Content-Type", "application/json")
		a := postJSONOrForm(req)
		if a.Status != http.StatusCreated || a.RefreshToken == "" {
			t.Fatalf("sign-in %d: %v", i, a)
		}
		tokens[i], sids[i] = a.RefreshToken, a.SessionID
	}
	refresh := func(base, token string) tokenAnswer {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return postJSONOrForm(req)
	}

	// phase: 0 before the stall, 1 during, 2 after SIGCONT.
	var phase atomic.Int32
	var stop atomic.Bool
	var okBefore, unavailable, okAfter atomic.Int64
	warm := make(chan struct{}, clients)
	resumed := make(chan struct{}, clients)
	var mu sync.Mutex
	var refused []string
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token := tokens[i]
			sentWarm, sentResumed := false, false
			warmups, sent := 0, 0
			for !stop.Load() {
				a := refresh(bases[(i+sent)%replicas], token)
				sent++
				switch {
				case a.Err == nil && a.Status == http.StatusOK:
					token = a.RefreshToken
					switch phase.Load() {
					case 0:
						okBefore.Add(1)
						// Ten refreshes each first: the clients run at a
						// steady pace when the stall begins.
						if warmups++; warmups == 10 && !sentWarm {
							sentWarm = true
							warm <- struct{}{}
						}
					case 2:
						okAfter.Add(1)
						if !sentResumed {
							sentResumed = true
							resumed <- struct{}{}
						}
					}
					// No pause: each client always has a refresh in
					// flight, so at SIGSTOP some are past their token
					// and session reads with the rotation script sent.
				case a.Err == nil && a.Status == http.StatusServiceUnavailable:
					unavailable.Add(1)
					time.Sleep(max(a.RetryAfter, 100*time.Millisecond))
				case a.Err != nil:
					time.Sleep(100 * time.Millisecond)
				default:
					// invalid_grant: the client would sign its user out.
					mu.Lock()
					refused = append(refused, fmt.Sprintf("client %d (sid %s): %v", i, sids[i], a))
					mu.Unlock()
					if !sentResumed {
						resumed <- struct{}{}
					}
					return
				}
			}
		}()
	}
	waitAll := func(ch chan struct{}, what string) {
		deadline := time.After(60 * time.Second)
		for range clients {
			select {
			case <-ch:
			case <-deadline:
				stop.Store(true)
				t.Fatalf("timed out waiting for every client to %s", what)
			}
		}
	}
	waitAll(warm, "refresh ten times before the stall")

	if err := r.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	phase.Store(1)
	t.Logf("redis-server stopped (SIGSTOP) for %v; reuse-grace %v", stall, grace)
	time.Sleep(stall) // the fault's length, not a synchronisation
	phase.Store(2)
	if err := r.Proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitAll(resumed, "refresh again after SIGCONT (or be refused)")
	stop.Store(true)
	wg.Wait()

	// The store's own view: sessions whose record carries a revocation.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	revoked := 0
	for _, sid := range sids {
		rev, err := rdb.HGet(context.Background(), "tokengate:s:{"+sid+"}", "rev").Result()
		if err != nil {
			t.Fatalf("session %s: %v", sid, err)
		}
		if rev != "" {
			revoked++
		}
	}
	t.Logf("%d clients: %d refreshes before the stall, %d answered 503, %d after SIGCONT; %d sessions revoked, %d clients refused",
		clients, okBefore.Load(), unavailable.Load(), okAfter.Load(), revoked, len(refused))
	if unavailable.Load() == 0 {
		t.Error("no refresh was answered 503 during the stall: the stall did not hit the clients")
	}
	if replicas > 1 {
		t.Logf("%d replicas: the count above is the documented residual, not a failure", replicas)
		return
	}
	if revoked > 0 || len(refused) > 0 {
		t.Errorf("%d of %d sessions revoked by a Redis stall; refused clients: %v", revoked, clients, refused)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: must be a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: must be a positive duration", name, v)
	}
	return d
}
