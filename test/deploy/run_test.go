package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runContainer starts a rendered container's command with the real binary,
// as the kubelet would, but with each volume mount moved under root and the
// listen addresses replaced by loopback ports. It returns the running
// process; it is killed when the test ends.
func runContainer(t *testing.T, c corev1.Container, root string, env, replace map[string]string) *proc {
	t.Helper()
	var args []string
	for _, a := range c.Args {
		for _, m := range c.VolumeMounts {
			a = strings.ReplaceAll(a, m.MountPath+"/", filepath.Join(root, m.MountPath)+"/")
		}
		for old, repl := range replace {
			a = strings.ReplaceAll(a, old, repl)
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, dockerfileBinary(t).bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", c.Name, p.out.String())
		}
	})
	return p
}

// proc is a started process: its output, and a channel closed when it exits.
type proc struct {
	out  *lockedBuffer
	done chan struct{}
}

// waitHealthy probes with `tokengate healthcheck` until it succeeds or the
// deadline passes: the readiness gate the chart's probes use.
func waitHealthy(t *testing.T, target string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("the process exited before %s became healthy:\n%s", target, p.out.String())
		default:
		}
		b, err := exec.Command(dockerfileBinary(t).bin, "healthcheck", "--timeout", "2s", target).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became healthy: %v %s\nprocess output:\n%s", target, err, b, p.out.String())
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a readiness probe, not synchronisation
	}
}

// TestChartRefresherStarts runs the refresher exactly as the chart invokes
// it (args, env, mounted files) with the key made by keygen as the hook
// would, and waits for /readyz: the rendered flags and values are accepted by
// the real service. bolt: the file lands on the data volume; redis: against a
// real redis-server, with the URL passed as the Secret-backed env var.
func TestChartRefresherStarts(t *testing.T) {
	t.Parallel()
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		objs := renderChart(t, valuesFile(t, "bolt-default.yaml"))
		sts := one(t, find[*appsv1.StatefulSet](objs), "refresher StatefulSet")
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "data"), 0o700)
		startRefresher(t, objs, &sts.Spec.Template.Spec, root, nil)
		if _, err := os.Stat(filepath.Join(root, "data", "tokengate.db")); err != nil {
			t.Errorf("the bolt file is not on the data volume: %v", err)
		}
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redisURL := startRedis(t)
		objs := renderChart(t, valuesFile(t, "redis-3-replicas.yaml"))
		var pod *corev1.PodSpec
		for _, d := range find[*appsv1.Deployment](objs) {
			if strings.HasSuffix(d.Name, "-refresher") {
				pod = &d.Spec.Template.Spec
			}
		}
		if pod == nil {
			t.Fatal("no refresher Deployment")
		}
		// The kubelet resolves secretKeyRef; here the Secret holds redisURL.
		env := map[string]string{}
		for _, e := range pod.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				env[e.Name] = redisURL
			}
		}
		if env["TOKENGATE_STORE"] == "" {
			t.Fatal("no Secret-backed TOKENGATE_STORE")
		}
		startRefresher(t, objs, pod, t.TempDir(), env)
	})
}

// chartAdminToken is the admin token written where the chart mounts its
// Secret, 48 characters like the one the chart generates.
var chartAdminToken = strings.Repeat("a1B2c3D4", 6)

// startRefresher starts the rendered refresher and returns its loopback port.
func startRefresher(t *testing.T, objs []rendered, pod *corev1.PodSpec, root string, env map[string]string) int {
	t.Helper()
	rf := pod.Containers[0]
	args := argMap(t, rf)
	// The mounted Secrets: the admin token (as the chart generates it) and
	// the signing key (as the keygen hook creates it).
	adminFile := filepath.Join(root, args["--admin-token-file"])
	os.MkdirAll(filepath.Dir(adminFile), 0o700)
	os.WriteFile(adminFile, []byte(chartAdminToken), 0o400)
	keyFile := filepath.Join(root, args["--signing-key"])
	job := one(t, find[*batchv1.Job](objs), "keygen Job")
	kg := job.Spec.Template.Spec.Containers[0]
	if out, err := exec.Command(dockerfileBinary(t).bin, "keygen", "--alg="+argMap(t, kg)["--alg"], "--out", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	if s, _ := mountedSecret(t, pod, rf, args["--signing-key"]); s != argMap(t, kg)["--kubernetes-secret"] {
		t.Fatalf("the refresher mounts %s, keygen writes %s", s, argMap(t, kg)["--kubernetes-secret"])
	}
	port := freePort(t)
	out := runContainer(t, rf, root, env, map[string]string{"--listen=:8080": fmt.Sprintf("--listen=127.0.0.1:%d", port)})
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), out)
	return port
}

// startRedis runs a throwaway redis-server on a free port (CI installs it;
// elsewhere the test skips without it) and returns its URL.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; install it with: apt-get install redis-server")
		}
		t.Skip("redis-server not found; install it with: apt-get install redis-server")
	}
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond) // waiting for a port to open
	}
}
