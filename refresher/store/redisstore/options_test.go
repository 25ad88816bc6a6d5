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

// go-redis's own URL parameters are read by go-redis's parser (redis.ParseURL,
// redis.ParseClusterURL for Cluster) and override the defaults derived from
// the timeout; the operation timeout stays the store's.
func TestParseURLDriverParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		url   string
		opts  Options
		check func(t *testing.T, p parsedURL)
	}{
		{"standalone pool and timeouts", "redis://h:6380/1?pool_size=20&dial_timeout=3s&read_timeout=250ms&min_idle_conns=2&client_name=tg", Options{}, func(t *testing.T, p parsedURL) {
			if p.opts.PoolSize != 20 || p.opts.DialTimeout != 3*time.Second || p.opts.ReadTimeout != 250*time.Millisecond ||
				p.opts.MinIdleConns != 2 || p.opts.ClientName != "tg" || p.opts.DB != 1 {
				t.Errorf("pool %d dial %v read %v idle %d name %q db %d", p.opts.PoolSize, p.opts.DialTimeout, p.opts.ReadTimeout, p.opts.MinIdleConns, p.opts.ClientName, p.opts.DB)
			}
			if p.opts.WriteTimeout != DefaultTimeout || p.timeout != DefaultTimeout || p.opts.MaxRetries != 1 {
				t.Errorf("defaults: write %v op %v retries %d", p.opts.WriteTimeout, p.timeout, p.opts.MaxRetries)
			}
		}},
		{"plain number is seconds", "redis://h?write_timeout=2&max_retries=3", Options{}, func(t *testing.T, p parsedURL) {
			if p.opts.WriteTimeout != 2*time.Second || p.opts.MaxRetries != 3 {
				t.Errorf("write %v retries %d", p.opts.WriteTimeout, p.opts.MaxRetries)
			}
		}},
		{"db parameter", "redis://h?db=4", Options{}, func(t *testing.T, p parsedURL) {
			if p.opts.DB != 4 {
				t.Errorf("db %d", p.opts.DB)
			}
		}},
		{"cluster: ParseClusterURL's parameters", "redis://a:7000,b:7001?max_redirects=5&pool_size=7&conn_max_idle_time=1m", Options{}, func(t *testing.T, p parsedURL) {
			if !p.cluster || p.opts.MaxRedirects != 5 || p.opts.PoolSize != 7 || p.opts.ConnMaxIdleTime != time.Minute {
				t.Errorf("cluster %v redirects %d pool %d idle %v", p.cluster, p.opts.MaxRedirects, p.opts.PoolSize, p.opts.ConnMaxIdleTime)
			}
			if d := cmp.Diff([]string{"a:7000", "b:7001"}, p.opts.Addrs); d != "" {
				t.Errorf("addrs (-want +got):\n%s", d)
			}
		}},
		{"sentinel with credentials and pool", "redis://app:pw@s1:26379,s2:26379/2?sentinel_master=m&sentinel_password=sp&pool_size=9", Options{}, func(t *testing.T, p parsedURL) {
			if p.opts.MasterName != "m" || p.opts.Username != "app" || p.opts.Password != "pw" || p.opts.SentinelPassword != "sp" ||
				p.opts.PoolSize != 9 || p.opts.DB != 2 || p.cluster {
				t.Errorf("master %q user %q pass %q sentinel pass %q pool %d db %d cluster %v", p.opts.MasterName, p.opts.Username,
					p.opts.Password, p.opts.SentinelPassword, p.opts.PoolSize, p.opts.DB, p.cluster)
			}
		}},
		{"rediss keeps its TLS settings", "rediss://h:6390?pool_size=4", Options{}, func(t *testing.T, p parsedURL) {
			if p.opts.TLSConfig == nil || p.opts.TLSConfig.ServerName != "h" || p.opts.TLSConfig.InsecureSkipVerify || p.opts.PoolSize != 4 {
				t.Errorf("tls %+v pool %d", p.opts.TLSConfig, p.opts.PoolSize)
			}
		}},
		{"pool size option", "redis://h", Options{PoolSize: 11}, func(t *testing.T, p parsedURL) {
			if p.opts.PoolSize != 11 {
				t.Errorf("pool %d", p.opts.PoolSize)
			}
		}},
		{"timeout option and IPv6", "redis://[::1]:7000", Options{Timeout: 300 * time.Millisecond}, func(t *testing.T, p parsedURL) {
			if p.opts.DialTimeout != 300*time.Millisecond || p.timeout != 300*time.Millisecond || p.opts.Addrs[0] != "[::1]:7000" {
				t.Errorf("dial %v op %v addrs %v", p.opts.DialTimeout, p.timeout, p.opts.Addrs)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := parseURL(tc.url, tc.opts)
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if !p.opts.ContextTimeoutEnabled {
				t.Error("operation deadlines not enforced")
			}
			tc.check(t, p)
		})
	}
}

// Bad go-redis parameters are reported with the others, each naming
// itself; parameters that would break the store are refused.
func TestParseURLDriverParamErrors(t *testing.T) {
	t.Parallel()
	_, err := parseURL("redis://h/x?pool_size=many&dial_timeout=soon&read_only=true&skip_verify=true&bogus=1&sentinel_master=m", Options{PoolSize: 3})
	if err == nil {
		t.Fatal("parseURL accepted bad parameters")
	}
	for _, want := range []string{"pool_size", "dial_timeout", `"read_only" is not supported`, `"skip_verify" is not supported`,
		`unknown parameter "bogus"`, `path "/x"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	_, err = parseURL("redis://a,b?db=2&route_randomly=true", Options{})
	for _, want := range []string{`unknown parameter "db"`, `"route_randomly" is not supported`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("cluster URL error does not mention %q: %v", want, err)
		}
	}
	_, err = parseURL("redis://h?pool_size=4", Options{PoolSize: 3})
	if err == nil || !strings.Contains(err.Error(), "pool_size 4 differs") {
		t.Errorf("conflicting pool sizes: %v", err)
	}
}
