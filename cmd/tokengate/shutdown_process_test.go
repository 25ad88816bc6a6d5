package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/internal/proctest"
)

// sigtermDrain is the drain period of the SIGTERM tests.
const sigtermDrain = 2 * time.Second

// loadResult counts what clients saw around a SIGTERM.
type loadResult struct {
	ok          atomic.Int64 // answered as expected
	okAfterTerm atomic.Int64 // of which after SIGTERM (during the drain period)
	refused     atomic.Int64 // connection refused: never sent, the listener was closed
	mu          sync.Mutex
	failed      []string // failed after being sent: the shutdown lost them
}

func (r *loadResult) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failed) < 20 {
		r.failed = append(r.failed, fmt.Sprintf(format, args...))
	}
}

// shutdownTimes are the moments the test saw, relative to SIGTERM.
type shutdownTimes struct {
	notServing time.Duration // first NOT_SERVING / 503 from readiness
	refused    time.Duration // first refused connection
	exited     time.Duration // process exit
}

// runLoad runs workers calling do in a loop until the load balancer they
// stand for stops sending (lbGone) or the listener refuses them; do
// returns nil (answered as expected), an error wrapping ECONNREFUSED (not
// sent), or another error (lost in flight).
func runLoad(workers int, term *atomic.Int64, lbGone *atomic.Bool, res *loadResult, do func() error) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !lbGone.Load() {
				err := do()
				switch {
				case err == nil:
					res.ok.Add(1)
					if term.Load() != 0 {
						res.okAfterTerm.Add(1)
					}
				case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused"):
					res.refused.Add(1)
					return
				default:
					res.fail("%v", err)
					if term.Load() == 0 {
						continue
					}
					return
				}
			}
		}()
	}
	return &wg
}

// lbReaction is how long the simulated load balancer takes to act on
// NOT_SERVING (a health-check interval or an endpoint update): it keeps
// sending for this long, well inside the drain period, then stops.
const lbReaction = sigtermDrain / 2

// watchReadiness polls a readiness probe on new connections, records the
// first not-ready answer and the first refused connection, and sets
// lbGone lbReaction after the first not-ready answer.
func watchReadiness(term *atomic.Int64, lbGone *atomic.Bool, times *shutdownTimes, mu *sync.Mutex, probe func() (ready bool, err error)) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ready, err := probe()
			at := time.Duration(0)
			if t0 := term.Load(); t0 != 0 {
				at = time.Since(time.Unix(0, t0))
			}
			mu.Lock()
			if err == nil && !ready && times.notServing == 0 && at > 0 {
				times.notServing = at
				time.AfterFunc(lbReaction, func() { lbGone.Store(true) })
			}
			if err != nil && strings.Contains(err.Error(), "connection refused") {
				if times.refused == 0 && at > 0 {
					times.refused = at
				}
				mu.Unlock()
				return
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return done
}

// checkShutdown asserts the drain contract and logs the figures.
func checkShutdown(t *testing.T, name string, res *loadResult, times shutdownTimes) {
	t.Helper()
	t.Logf("%s SIGTERM under load: %d requests answered (%d after SIGTERM), %d refused, %d failed in flight; NOT_SERVING after %v, load balancer gone after %v more, listener closed after %v, exit after %v (drain period %v)",
		name, res.ok.Load(), res.okAfterTerm.Load(), res.refused.Load(), len(res.failed), times.notServing.Round(time.Millisecond),
		lbReaction, times.refused.Round(time.Millisecond), times.exited.Round(time.Millisecond), sigtermDrain)
	if len(res.failed) > 0 || res.refused.Load() > 0 {
		t.Errorf("%s: %d requests failed in flight, %d refused while the load balancer still sent, e.g. %v", name, len(res.failed), res.refused.Load(), res.failed)
	}
	if times.notServing == 0 || times.notServing > time.Second {
		t.Errorf("%s: NOT_SERVING seen %v after SIGTERM, want at once (≤ 1 s)", name, times.notServing)
	}
	if times.refused < sigtermDrain {
		t.Errorf("%s: listener closed %v after SIGTERM, before the %v drain period ended", name, times.refused, sigtermDrain)
	}
	if res.okAfterTerm.Load() == 0 {
		t.Errorf("%s: no request answered during the drain period", name)
	}
	// Generous bound: without Watch streams ending, a graceful stop
	// waited for the whole 20–25 s grace.
	if limit := sigtermDrain + 5*time.Second; times.exited > limit {
		t.Errorf("%s: exit %v after SIGTERM, want within %v", name, times.exited, limit)
	}
}

func waitExit(t *testing.T, p *proctest.Process, term *atomic.Int64) time.Duration {
	t.Helper()
	select {
	case <-p.Done():
		return time.Since(time.Unix(0, term.Load()))
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30 s after SIGTERM:\n%s", p.Output())
		return 0
	}
}

// SIGTERM under load: extauthz with checks over gRPC and
// forward-auth over HTTP in a loop and a health Watch stream open. The
// clients stand for a load balancer that keeps sending for lbReaction
// after it could see NOT_SERVING. After SIGTERM: NOT_SERVING at once
// (Watch and /readyz), every request still answered during the drain
// period, the listeners close only after it, no request fails, and the
// process exits promptly although the Watch stream was open.
func TestExtauthzSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	bin := proctest.Tokengate(t)
	f := newEAFixture(t)
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	p := proctest.Start(t, "extauthz", []string{"TOKENGATE_DRAIN_PERIOD=" + sigtermDrain.String()}, bin,
		"extauthz", "--config", f.configPath, "--grpc-listen", grpcAddr, "--http-listen", httpAddr)
	p.WaitHTTP(t, "http://"+httpAddr+"/readyz", 200, 30*time.Second)
	tok := f.token(t, "api")

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watchConn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer watchConn.Close()
	watch, err := healthpb.NewHealthClient(watchConn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v %v", r, err)
	}

	var term atomic.Int64
	var lbGone atomic.Bool
	var res loadResult
	authz := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.test", Path: "/api/x", Headers: map[string]string{"authorization": "Bearer " + tok}},
	}}}
	grpcLoad := runLoad(4, &term, &lbGone, &res, func() error {
		resp, err := authz.Check(context.Background(), req)
		if err != nil {
			return err
		}
		if resp.GetOkResponse() == nil {
			return fmt.Errorf("check denied: %v", resp)
		}
		return nil
	})
	client := &http.Client{Transport: &http.Transport{}}
	httpLoad := runLoad(4, &term, &lbGone, &res, func() error {
		r, _ := http.NewRequest("GET", "http://"+httpAddr+"/authz/api/x", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(r)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("forward-auth: %d", resp.StatusCode)
		}
		return nil
	})

	var times shutdownTimes
	var mu sync.Mutex
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	readyz := watchReadiness(&term, &lbGone, &times, &mu, func() (bool, error) {
		resp, err := probe.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	watched := make(chan time.Duration, 1)
	go func() {
		r, err := watch.Recv()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			watched <- time.Since(time.Unix(0, term.Load()))
			return
		}
		watched <- -1
	}()

	// Let the load run, then SIGTERM.
	for res.ok.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	term.Store(time.Now().UnixNano())
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := waitExit(t, p, &term)
	mu.Lock()
	times.exited = exited
	mu.Unlock()
	grpcLoad.Wait()
	httpLoad.Wait()
	<-readyz
	if w := <-watched; w < 0 || w > time.Second {
		t.Errorf("Watch NOT_SERVING after %v, want at once", w)
	}
	checkShutdown(t, "extauthz", &res, times)
}

// SIGTERM under load for the refresher: session creation (POST, never
// retried by clients) and JWKS reads in a loop; /readyz 503 at once, all
// answered during the drain period, none lost, a prompt exit.
func TestRefresherSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := proctest.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	p := proctest.Start(t, "refresher", []string{"TOKENGATE_DRAIN_PERIOD=" + sigtermDrain.String()}, proctest.Tokengate(t),
		"refresher", "--dev", "--listen", "127.0.0.1:"+strconv.Itoa(port), "--store", "bolt://"+dir+"/tokengate.db",
		"--issuer", "https://auth.test", "--audience", "api")
	p.WaitHTTP(t, base+"/readyz", http.StatusOK, 20*time.Second)
	admin := readAdminToken(t, dir)

	var term atomic.Int64
	var lbGone atomic.Bool
	var res loadResult
	client := &http.Client{Transport: &http.Transport{}}
	do := func(method, path, body string, want int) error {
		r, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+admin)
		}
		resp, err := client.Do(r)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
		}
		return nil
	}
	sessions := runLoad(3, &term, &lbGone, &res, func() error {
		return do("POST", "/v1/sessions", `{"sub":"alice"}`, http.StatusCreated)
	})
	jwks := runLoad(3, &term, &lbGone, &res, func() error {
		return do("GET", "/.well-known/jwks.json", "", http.StatusOK)
	})
	var times shutdownTimes
	var mu sync.Mutex
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	readyz := watchReadiness(&term, &lbGone, &times, &mu, func() (bool, error) {
		resp, err := probe.Get(base + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	for res.ok.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}
	term.Store(time.Now().UnixNano())
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := waitExit(t, p, &term)
	mu.Lock()
	times.exited = exited
	mu.Unlock()
	sessions.Wait()
	jwks.Wait()
	<-readyz
	checkShutdown(t, "refresher", &res, times)
}
