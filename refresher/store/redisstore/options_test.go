package redisstore

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		url         string
		opts        Options
		wantAddrs   []string
		wantCluster bool
		wantMaster  string
		wantDB      int
		wantTLS     bool
		wantPrefix  string
		wantUser    string
		wantPass    string
	}{
		{name: "standalone", url: "redis://127.0.0.1:6380/2", wantAddrs: []string{"127.0.0.1:6380"}, wantDB: 2, wantPrefix: DefaultKeyPrefix},
		{name: "default port", url: "redis://redis", wantAddrs: []string{"redis:6379"}, wantPrefix: DefaultKeyPrefix},
		{name: "tls and credentials", url: "rediss://app:s3cret@redis.example:6390", wantAddrs: []string{"redis.example:6390"}, wantTLS: true, wantUser: "app", wantPass: "s3cret", wantPrefix: DefaultKeyPrefix},
		{name: "cluster host list", url: "redis://a:7000,b:7001,c", wantAddrs: []string{"a:7000", "b:7001", "c:6379"}, wantCluster: true, wantPrefix: DefaultKeyPrefix},
		{name: "cluster addr params", url: "redis://a:7000?addr=b:7001&addr=c:7002", wantAddrs: []string{"a:7000", "b:7001", "c:7002"}, wantCluster: true, wantPrefix: DefaultKeyPrefix},
		{name: "cluster endpoint", url: "redis://cfg.example:6379?cluster=true", wantAddrs: []string{"cfg.example:6379"}, wantCluster: true, wantPrefix: DefaultKeyPrefix},
		{name: "sentinel flag", url: "redis://s1:26379,s2:26379", opts: Options{SentinelMaster: "mymaster"}, wantAddrs: []string{"s1:26379", "s2:26379"}, wantMaster: "mymaster", wantPrefix: DefaultKeyPrefix},
		{name: "sentinel param", url: "redis://s1:26379?sentinel_master=m1&key_prefix=tg2:", wantAddrs: []string{"s1:26379"}, wantMaster: "m1", wantPrefix: "tg2:"},
		{name: "prefix option wins", url: "redis://h?key_prefix=a:", opts: Options{KeyPrefix: "b:"}, wantAddrs: []string{"h:6379"}, wantPrefix: "b:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := parseURL(tc.url, tc.opts)
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if d := cmp.Diff(tc.wantAddrs, p.opts.Addrs); d != "" {
				t.Errorf("addrs (-want +got):\n%s", d)
			}
			if p.cluster != tc.wantCluster || p.opts.MasterName != tc.wantMaster || p.opts.DB != tc.wantDB ||
				(p.opts.TLSConfig != nil) != tc.wantTLS || p.prefix != tc.wantPrefix ||
				p.opts.Username != tc.wantUser || p.opts.Password != tc.wantPass {
				t.Errorf("got cluster=%v master=%q db=%d tls=%v prefix=%q user=%q pass=%q",
					p.cluster, p.opts.MasterName, p.opts.DB, p.opts.TLSConfig != nil, p.prefix, p.opts.Username, p.opts.Password)
			}
			if p.opts.ReadTimeout != DefaultTimeout || p.opts.DialTimeout != DefaultTimeout || !p.opts.ContextTimeoutEnabled {
				t.Errorf("timeouts: read %v dial %v context %v; want %v bounded", p.opts.ReadTimeout, p.opts.DialTimeout, p.opts.ContextTimeoutEnabled, DefaultTimeout)
			}
		})
	}
}

func TestParseURLTimeout(t *testing.T) {
	t.Parallel()
	p, err := parseURL("redis://h", Options{Timeout: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if p.opts.ReadTimeout != 250*time.Millisecond || p.opts.WriteTimeout != 250*time.Millisecond || p.opts.PoolTimeout != 250*time.Millisecond {
		t.Errorf("timeouts = %v/%v/%v, want 250ms each", p.opts.ReadTimeout, p.opts.WriteTimeout, p.opts.PoolTimeout)
	}
}

// TestParseURLErrors: every problem is reported at once, naming what is wrong.
func TestParseURLErrors(t *testing.T) {
	t.Parallel()
	_, err := parseURL("http://a,b/3?bogus=1&cluster=maybe", Options{KeyPrefix: "x{y}", Timeout: -time.Second})
	if err == nil {
		t.Fatal("parseURL accepted a bad URL")
	}
	for _, want := range []string{`scheme "http"`, `unknown parameter "bogus"`, `cluster="maybe"`, "only database 0", `prefix "x{y}"`, "timeout -1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := redact("redis://app:s3cret@h:1?sentinel_password=top")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "top") {
		t.Errorf("redact left a secret: %s", got)
	}
}
