// Package proctest starts real processes for integration and end-to-end
// tests: the tokengate binary (built once per test binary), redis-server and
// nginx from the system, each on a free loopback port, each stopped when the
// test ends. Tests that need a system binary fail when CI=true and it is
// missing, and skip (saying what to install) otherwise.
package proctest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/tokengate/tokengate/internal/keyset"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// RequireBinary returns the path of a system binary, failing under CI and
// skipping elsewhere when it is missing.
func RequireBinary(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found; install it with: %s", name, install)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Tokengate builds ./cmd/tokengate once per test binary and returns its path.
func Tokengate(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tokengate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "tokengate")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/tokengate")
		cmd.Dir = moduleRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ModuleRoot returns the repository root (where go.mod is).
func ModuleRoot() string { return moduleRoot() }

// Process is a started child process whose output is kept for failure reports.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// process's (or a logger's) output read while it is still being written.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a command; its combined output is printed if the test fails.
// The process gets SIGTERM (then SIGKILL after 10 s) when the test ends.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, out: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	// No drain period unless a test asks for one: every test would
	// otherwise wait for it at its end (env entries later in the list win).
	p.Cmd.Env = append(append(os.Environ(), "TOKENGATE_DRAIN_PERIOD=0s"), env...)
	p.Cmd.Stdout = p.out
	p.Cmd.Stderr = p.out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Stop(t) // the exit status matters only to tests that stop the process themselves
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.Output())
		}
	})
	return p
}

// Output returns what the process has printed so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.Cmd.Process.Pid, sig)
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after 10 s). It returns
// the process's exit error.
func (p *Process) Stop(t testing.TB) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Kill stops the process with SIGKILL and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitHTTP polls url until it answers wantStatus, the process exits, or the
// timeout passes. Polling is for start-up only, never for test assertions.
func (p *Process) WaitHTTP(t testing.TB, url string, wantStatus int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == wantStatus {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered %d: %v\n%s", p.Name, url, wantStatus, p.err, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer %d within %v (last error %v)\n%s", p.Name, url, wantStatus, timeout, err, p.Output())
		}
	}
}

// WaitTCP polls addr until it accepts a connection.
func (p *Process) WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s accepted: %v\n%s", p.Name, addr, p.err, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not accepting within %v: %v\n%s", p.Name, addr, timeout, err, p.Output())
		}
	}
}

// Redis is a redis-server started for one test on a free port.
type Redis struct {
	Addr string
	Port int
	dir  string
	bin  string
	t    testing.TB
	Proc *Process
}

// StartRedis starts redis-server (no persistence unless args ask for it) on
// a free loopback port, in a temporary directory.
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	bin := RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	r := &Redis{Port: FreePort(t), dir: t.TempDir(), bin: bin, t: t}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	r.start(args...)
	return r
}

func (r *Redis) start(args ...string) {
	r.t.Helper()
	base := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no"}
	r.Proc = Start(r.t, "redis-server", nil, r.bin, append(base, args...)...)
	r.Proc.WaitTCP(r.t, r.Addr, 10*time.Second)
}

// Stop kills the server by its PID (simulating an outage).
func (r *Redis) Stop() { r.Proc.Kill() }

// Restart starts the server again on the same port.
func (r *Redis) Restart(args ...string) { r.start(args...) }

// SigningKeyFile writes a new ES256 signing key (a JWK file, as `tokengate
// refresher --signing-key` reads it) into the test's temporary directory
// and returns its path; every replica a test starts can share it.
func SigningKeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signing-key.json")
	if _, _, err := keyset.LoadOrCreate(path, jwa.ES256()); err != nil {
		t.Fatal(err)
	}
	return path
}
