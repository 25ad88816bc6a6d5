package redisstore_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/refresher/store"
	"github.com/tokengate/tokengate/refresher/store/storetest"
)

// TestConformanceCluster runs the suite on a real three-node Redis Cluster
// (every node a redis-server on free ports, slots assigned by redis-cli),
// so a script touching keys of two slots would fail here with CROSSSLOT.
func TestConformanceCluster(t *testing.T) {
	cli := proctest.RequireBinary(t, "redis-cli", "apt-get install -y redis-tools")
	var addrs []string
	for range 3 {
		r := proctest.StartRedis(t, "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes-"+strconv.Itoa(proctest.FreePort(t))+".conf",
			"--cluster-port", strconv.Itoa(proctest.FreePort(t)))
		addrs = append(addrs, r.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Start-up polling: every node must see the whole cluster as ok.
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range addrs {
		host, port, _ := strings.Cut(addr, ":")
		for {
			out, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok: %s", addr, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	url := "redis://" + strings.Join(addrs, ",")
	storetest.Run(t, func(t *testing.T) store.Store { return openURL(t, url) })
}

// TestConformanceSentinel runs the suite through Sentinel: a primary, and
// one sentinel (redis-server --sentinel) monitoring it; the store is given
// only the sentinel's address and the master name.
func TestConformanceSentinel(t *testing.T) {
	primary := proctest.StartRedis(t)
	bin := proctest.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	port := proctest.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	host, pport, _ := strings.Cut(primary.Addr, ":")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor tgmaster %s %s 1\n", port, dir, host, pport)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sentinel := proctest.Start(t, "redis-sentinel", nil, bin, conf, "--sentinel")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	sentinel.WaitTCP(t, addr, 10*time.Second)

	storetest.Run(t, func(t *testing.T) store.Store { return openURL(t, "redis://"+addr+"?sentinel_master=tgmaster") })
}
