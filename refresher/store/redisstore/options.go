package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds one store operation when Options.Timeout is zero.
const DefaultTimeout = time.Second

// DefaultKeyPrefix starts every key the store writes.
const DefaultKeyPrefix = "tokengate:"

// Options are the settings that are not part of the URL.
type Options struct {
	// SentinelMaster is the name of the master set monitored by Sentinel
	// (--redis-sentinel-master). When set, the URL's addresses are the
	// Sentinels', not the server's.
	SentinelMaster string
	// Timeout bounds each store operation, all its round trips and retries
	// included (--redis-timeout, default 1s). Connection dial, read and
	// write timeouts are set to it too. A Revocations wait is added to it.
	Timeout time.Duration
	// KeyPrefix starts every key (default "tokengate:"), so several
	// deployments can share one Redis. It must not contain '{' or '}'.
	KeyPrefix string
	// PoolSize is the connection pool size per node (0: go-redis's default,
	// ten per CPU). Each waiting revocation long-poll holds a connection.
	PoolSize int
	// Logger receives go-redis's own messages (dial failures, pool events)
	// at debug level, and at Open the warning when Redis's persistence can
	// lose acknowledged rotations (see CheckDurability); the store's errors
	// reach the caller anyway. Nil leaves go-redis's logger as it is and
	// skips the check. go-redis has one process-wide logger, so the last
	// Open with a Logger wins.
	Logger *slog.Logger
	// TLSConfig replaces the TLS settings a rediss:// URL implies (server
	// name from the first address, TLS 1.2 minimum), e.g. to add a CA.
	TLSConfig *tls.Config
}

// parsedURL is what a redis:// or rediss:// URL says.
type parsedURL struct {
	opts    redis.UniversalOptions
	cluster bool
	prefix  string
}

// knownParams are the query parameters a store URL may carry.
var knownParams = []string{"addr", "cluster", "sentinel_master", "sentinel_username", "sentinel_password", "client_name", "key_prefix"}

// parseURL reads
//
//	redis[s]://[user:password@]host[:port][,host[:port]…][/db][?addr=host:port&cluster=true&sentinel_master=name…]
//
// Several addresses (in the host list or as addr parameters) mean Redis
// Cluster, unless a Sentinel master is named (then they are Sentinels);
// cluster=true forces Cluster mode with one address (a cluster's
// configuration endpoint). Every problem is reported at once.
func parseURL(raw string, o Options) (parsedURL, error) {
	var p parsedURL
	raw, extra := splitHosts(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return p, fmt.Errorf("redis URL: %w", err)
	}
	var errs []error
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		errs = append(errs, fmt.Errorf("redis URL: scheme %q: must be redis or rediss", u.Scheme))
	}
	q := u.Query()
	for name := range q {
		if !slices.Contains(knownParams, name) {
			errs = append(errs, fmt.Errorf("redis URL: unknown parameter %q (known: %s)", name, strings.Join(knownParams, ", ")))
		}
	}
	var addrs []string
	for _, h := range append(append([]string{u.Host}, extra...), q["addr"]...) {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "6379")
		}
		addrs = append(addrs, h)
	}
	if len(addrs) == 0 {
		addrs = []string{"localhost:6379"}
	}
	p.opts.Addrs = addrs
	if u.User != nil {
		p.opts.Username = u.User.Username()
		p.opts.Password, _ = u.User.Password()
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("redis URL: path %q: must be a database number", u.Path))
		}
		p.opts.DB = n
	}
	p.opts.MasterName = o.SentinelMaster
	if m := q.Get("sentinel_master"); m != "" {
		if o.SentinelMaster != "" && o.SentinelMaster != m {
			errs = append(errs, fmt.Errorf("redis URL: sentinel_master %q differs from --redis-sentinel-master %q", m, o.SentinelMaster))
		}
		p.opts.MasterName = m
	}
	p.opts.SentinelUsername = q.Get("sentinel_username")
	p.opts.SentinelPassword = q.Get("sentinel_password")
	p.opts.ClientName = q.Get("client_name")
	if c := q.Get("cluster"); c != "" {
		force, err := strconv.ParseBool(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("redis URL: cluster=%q: must be true or false", c))
		}
		p.opts.IsClusterMode = force
	}
	p.cluster = p.opts.MasterName == "" && (len(addrs) > 1 || p.opts.IsClusterMode)
	if p.cluster && p.opts.DB != 0 {
		errs = append(errs, errors.New("redis URL: Redis Cluster has only database 0"))
	}
	if u.Scheme == "rediss" {
		host, _, _ := net.SplitHostPort(addrs[0])
		p.opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	if o.TLSConfig != nil {
		p.opts.TLSConfig = o.TLSConfig
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		errs = append(errs, fmt.Errorf("redis key prefix %q: must not contain '{' or '}' (they mark hash tags)", o.KeyPrefix))
	}
	if kp := q.Get("key_prefix"); strings.ContainsAny(kp, "{}") {
		errs = append(errs, fmt.Errorf("redis URL: key_prefix %q: must not contain '{' or '}'", kp))
	}
	p.prefix = DefaultKeyPrefix
	if kp := q.Get("key_prefix"); kp != "" {
		p.prefix = kp
	}
	if o.KeyPrefix != "" {
		p.prefix = o.KeyPrefix
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("redis timeout %v: must be positive", o.Timeout))
	}

	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	// Every wait is bounded by the operation's timeout: an outage makes the
	// refresher answer 503 quickly instead of piling requests up.
	p.opts.DialTimeout = timeout
	p.opts.ReadTimeout = timeout
	p.opts.WriteTimeout = timeout
	p.opts.PoolTimeout = timeout
	p.opts.ContextTimeoutEnabled = true
	p.opts.MaxRetries = 1
	p.opts.MinRetryBackoff = 8 * time.Millisecond
	p.opts.MaxRetryBackoff = 64 * time.Millisecond
	p.opts.DialerRetries = 1
	p.opts.PoolSize = o.PoolSize
	return p, errors.Join(errs...)
}

// splitHosts takes a comma-separated host list out of the URL's authority
// (net/url refuses it) and returns the URL with the first host only, and
// the other hosts.
func splitHosts(raw string) (string, []string) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw, nil
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo := ""
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, authority = authority[:at+1], authority[at+1:]
	}
	hosts := strings.Split(authority, ",")
	return scheme + "://" + userinfo + hosts[0] + tail, hosts[1:]
}

// redact returns the URL without its password, for errors and logs.
func redact(raw string) string {
	raw, _ = splitHosts(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	if q.Has("sentinel_password") {
		q.Set("sentinel_password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// redisLogger adapts go-redis's logging to slog.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
}
