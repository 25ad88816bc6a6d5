package fault

import (
	"bufio"
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
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokengate/tokengate/internal/proctest"
)

// The kit: a refresher process that can be killed and restarted on the same
// port and store, clients that behave like the TypeScript client under
// faults, and the checks (bolt check, feed, /proc). Every fault test of this
// package uses it; a Redis variant passes a redis:// store to
// startRefresher.

const (
	adminToken = "fault-admin-token-0123456789abcdef"
	issuer     = "https://issuer.fault.test"
	audience   = "fault-app"
)

// long reports whether the long variants run (make test-fault-long).
func long() bool { return os.Getenv("TOKENGATE_FAULT_LONG") != "" }

// pick returns short normally and long under TOKENGATE_FAULT_LONG.
func pick[T any](short, long_ T) T {
	if long() {
		return long_
	}
	return short
}

// signingKey writes one ES256 key that every refresher of the test shares.
func signingKey(t *testing.T) string { return proctest.SigningKeyFile(t) }

// refresher is a `tokengate refresher` that keeps its port and store across
// kills, so clients keep one URL.
type refresher struct {
	t    *testing.T
	URL  string
	args []string
	Proc *proctest.Process
	// starts counts process starts (the first included).
	starts int
}

// startRefresher starts a refresher on storeURI (bolt://PATH, redis://…)
// and waits until /readyz answers 200. Rate limits are off: the clients
// below refresh as fast as they can on purpose.
func startRefresher(t *testing.T, storeURI string, extra ...string) *refresher {
	t.Helper()
	port := proctest.FreePort(t)
	r := &refresher{t: t, URL: "http://127.0.0.1:" + strconv.Itoa(port)}
	r.args = append([]string{"refresher",
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--store", storeURI,
		"--signing-key", signingKey(t),
		"--issuer", issuer,
		"--audience", audience,
		"--admin-token", adminToken,
		"--rate-limit-ip", "0",
		"--rate-limit-session", "0",
		"--log-level", "warn",
	}, extra...)
	r.start()
	return r
}

func (r *refresher) start() {
	r.t.Helper()
	r.starts++
	r.Proc = proctest.Start(r.t, "refresher#"+strconv.Itoa(r.starts), nil, proctest.Tokengate(r.t), r.args...)
	r.Proc.WaitHTTP(r.t, r.URL+"/readyz", http.StatusOK, 30*time.Second)
}

// Kill9 kills the process with SIGKILL and waits for it to exit.
func (r *refresher) Kill9() { r.Proc.Kill() }

// Restart starts the process again on the same port and store.
func (r *refresher) Restart() { r.start() }

// Stop stops the process with SIGTERM and waits.
func (r *refresher) Stop() { _ = r.Proc.Stop(r.t) }

// answer is one HTTP answer of the refresher, decoded (proctest.Do).
type answer = proctest.Answer

var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256},
}

func do(req *http.Request) answer { return proctest.Do(httpClient, req) }

// signIn creates a session through the admin API.
func signIn(base, sub string) answer {
	body, _ := json.Marshal(map[string]any{"sub": sub, "claims": map[string]any{"name": "Fault " + sub, "roles": []string{"user"}}})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/sessions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	return do(req)
}

// refresh presents a refresh token (RFC 6749 §6).
func refresh(base, token string) answer {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(req)
}

// status answers the status of GET u (0 when the answer was lost).
func status(u string) int {
	resp, err := httpClient.Get(u)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// feedLen is how many sessions the refresher's revocation feed lists: a
// session revoked by reuse detection would be there.
func feedLen(t *testing.T, base string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/revocations?wait=0s", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/revocations: %v", err)
	}
	defer resp.Body.Close()
	var f struct {
		Revoked []json.RawMessage `json:"revoked"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/revocations: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		t.Fatal(err)
	}
	return len(f.Revoked)
}

// metric sums every series of a metric on base's /metrics (-1 if absent or
// unreachable).
func metric(base, name string) float64 {
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// client is one signed-in browser as the TypeScript client behaves under
// faults: it always presents its newest refresh token, and when an answer
// is lost (transport error) or is a 503, it presents the same token again.
// Any other answer than 200 to a refresh is a session lost.
type client struct {
	Sub   string
	Token string
	// Access is the newest access token (for checks against extauthz).
	Access atomic.Pointer[string]

	Rotations, Retries int
	// Lost is the answer that lost the session (nil while it lives).
	Lost *answer
}

// newClients signs in n clients.
func newClients(t *testing.T, base, prefix string, n int) []*client {
	t.Helper()
	out := make([]*client, n)
	for i := range out {
		sub := fmt.Sprintf("%s-%d", prefix, i)
		a := signIn(base, sub)
		if a.Err != nil || a.Status != http.StatusCreated {
			t.Fatalf("sign in %s: %v", sub, a)
		}
		out[i] = &client{Sub: sub, Token: a.Body.RefreshToken}
		out[i].Access.Store(&a.Body.AccessToken)
	}
	return out
}

// step makes one refresh; it reports false once the session is lost.
func (c *client) step(base string) bool {
	a := refresh(base, c.Token)
	switch {
	case a.Err != nil || a.Status == http.StatusServiceUnavailable:
		c.Retries++
		// The process is restarting or the store cannot commit: back off
		// a little, as the client does on Retry-After.
		time.Sleep(20 * time.Millisecond)
	case a.Status == http.StatusOK:
		c.Rotations++
		c.Token = a.Body.RefreshToken
		c.Access.Store(&a.Body.AccessToken)
	default:
		c.Lost = &a
		return false
	}
	return true
}

// runClients refreshes every client in its own goroutine until ctx ends or
// its session is lost, and returns when all have stopped.
func runClients(ctx context.Context, base string, clients []*client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && c.step(base) {
			}
		}()
	}
	wg.Wait()
}

// settle refreshes each client until it gets a 200 (retrying lost answers
// and 503s for up to timeout), proving its session is alive after the
// faults.
func settle(t *testing.T, base string, clients []*client, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, c := range clients {
		if c.Lost != nil {
			continue
		}
		for before := c.Rotations; c.Rotations == before; {
			if !c.step(base) || time.Now().After(deadline) {
				break
			}
		}
	}
}

// boltCheck opens a bolt file (after its process stopped) and runs
// bbolt's consistency check (Tx.Check), failing the test on any error.
func boltCheck(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s for bolt check: %v", path, err)
	}
	defer db.Close()
	var problems []string
	err = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e.Error())
		}
		return nil
	})
	if err != nil || len(problems) > 0 {
		t.Fatalf("bolt check of %s: %v %v", path, err, problems)
	}
}

// procStats reads a process's resident set (KiB, VmRSS) and open file
// descriptors from /proc.
func procStats(t *testing.T, pid int) (rssKiB, fds int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			rssKiB, _ = strconv.Atoi(f[1])
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/fd: %v", pid, err)
	}
	return rssKiB, len(ents)
}

// fileSize is the size of path in bytes.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
