package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
)

const (
	adminToken = "e2e-admin-token-0123456789abcdef"
	issuer     = "https://issuer.e2e.test"
	audience   = "e2e-app"
)

// signingKey writes one ES256 key that every refresher of the test shares.
func signingKey(t *testing.T) string { return proctest.SigningKeyFile(t) }

// replica is one running `tokengate refresher`.
type replica struct {
	Name string
	URL  string
	Proc *proctest.Process
}

// startRefresher starts a refresher replica on the Redis at redisAddr.
// Rate limits are off: the storms below are one client hammering on
// purpose.
func startRefresher(t *testing.T, name, redisAddr, keyPath string, extra ...string) replica {
	t.Helper()
	r := launchRefresher(t, name, redisAddr, keyPath, extra...)
	r.Proc.WaitHTTP(t, r.URL+"/readyz", http.StatusOK, 20*time.Second)
	return r
}

// launchRefresher starts a refresher and waits only until it is alive.
func launchRefresher(t *testing.T, name, redisAddr, keyPath string, extra ...string) replica {
	t.Helper()
	bin := proctest.Tokengate(t)
	port := proctest.FreePort(t)
	args := append([]string{"refresher",
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--store", "redis://" + redisAddr,
		"--signing-key", keyPath,
		"--issuer", issuer,
		"--audience", audience,
		"--admin-token", adminToken,
		"--rate-limit-ip", "0",
		"--rate-limit-session", "0",
		"--log-level", "warn",
	}, extra...)
	p := proctest.Start(t, name, nil, bin, args...)
	r := replica{Name: name, URL: "http://127.0.0.1:" + strconv.Itoa(port), Proc: p}
	p.WaitHTTP(t, r.URL+"/healthz", http.StatusOK, 20*time.Second)
	return r
}

// tokenResponse is the refresher's token answer (or error).
// tokenResponse and answer are the refresher's answers (proctest.Do).
type (
	tokenResponse = proctest.TokenResponse
	answer        = proctest.Answer
)

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 512},
}

func do(req *http.Request) answer { return proctest.Do(client, req) }

// createSession signs sub in through the admin API.
func createSession(t *testing.T, r replica, sub string) tokenResponse {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"sub": sub, "claims": map[string]any{"name": "E2E " + sub, "roles": []string{"user"}}})
	var a answer
	// A login backend retries a 503 (the store did not answer in time,
	// e.g. a Redis with appendfsync always on a busy disk); so does the
	// setup of these tests, a few times.
	for attempt := 0; attempt < 10; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/sessions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		if a = do(req); a.Err != nil || a.Status != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if a.Err != nil || a.Status != http.StatusCreated || a.Body.RefreshToken == "" {
		t.Fatalf("POST %s/v1/sessions: %v", r.URL, a)
	}
	return a.Body
}

// refresh presents a refresh token (RFC 6749 §6, form-encoded).
func refresh(r replica, token string) answer {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(req)
}

// revoke signs out with a refresh token (RFC 7009).
func revoke(r replica, token string) answer {
	form := url.Values{"token": {token}, "token_type_hint": {"refresh_token"}}
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(req)
}

// metric sums every series of a metric on a process's /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// status answers the status of GET url (0 on a transport error).
func status(url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// feedJSON is GET /v1/revocations's answer.
type feedJSON struct {
	Cursor  string `json:"cursor"`
	Revoked []struct {
		SID   string    `json:"sid"`
		Until time.Time `json:"until"`
	} `json:"revoked"`
}

func readFeed(t *testing.T, r replica, after string) feedJSON {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v1/revocations?wait=0s&after="+url.QueryEscape(after), nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s/v1/revocations: %v", r.URL, err)
	}
	defer resp.Body.Close()
	var f feedJSON
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/v1/revocations: %d %s", r.URL, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

// refresherProvider is the providers block of an extauthz config that
// trusts the refresher ref (its issuer, audience and JWKS), for tests that
// add their own routes, dpop and forward_auth settings after it.
func refresherProvider(ref replica) string {
	return fmt.Sprintf("providers:\n  - name: refresher\n    issuer: %s\n    audiences: [%s]\n    jwks_url: %s/.well-known/jwks.json\n",
		issuer, audience, ref.URL)
}
