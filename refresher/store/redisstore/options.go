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
	// included (--redis-timeout, default 1s). Connection dial, read, write
	// and pool-wait timeouts are set to it too, unless the URL sets them. A
	// Revocations wait is added to it.
	Timeout time.Duration
	// KeyPrefix starts every key (default "tokengate:"), so several
	// deployments can share one Redis. It must not contain '{' or '}'.
	KeyPrefix string
	// PoolSize is the connection pool size per node (0: the URL's pool_size,
	// else go-redis's default, ten per CPU). Each waiting revocation long-poll holds a connection.
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
	// timeout bounds one store operation (Options.Timeout or its default).
	timeout time.Duration
}

// ownParams are the query parameters tokengate reads itself; every other
// parameter is go-redis's own (pool_size, dial_timeout, read_timeout, …),
// read by redis.ParseURL, or redis.ParseClusterURL for Cluster.
var ownParams = []string{"addr", "cluster", "sentinel_master", "sentinel_username", "sentinel_password", "key_prefix"}

// refusedParams are go-redis parameters the store cannot work with: reads
// from replicas would judge a rotation on stale session state, and an
// unverified TLS certificate would hand the sessions to whoever answers.
var refusedParams = map[string]string{
	"read_only":        "reads from replicas could see a session before its last rotation",
	"route_by_latency": "reads from replicas could see a session before its last rotation",
	"route_randomly":   "reads from replicas could see a session before its last rotation",
	"skip_verify":      "the server's certificate is always verified (Options.TLSConfig adds a CA)",
}

// parseURL reads
//
//	redis[s]://[user:password@]host[:port][,host[:port]…][/db][?addr=host:port&cluster=true&sentinel_master=name&pool_size=20…]
//
// Several addresses (in the host list or as addr parameters) mean Redis
// Cluster, unless a Sentinel master is named (then they are Sentinels);
// cluster=true forces Cluster mode with one address (a cluster's
// configuration endpoint). The parameters other than ownParams are
// go-redis's, parsed by go-redis itself (redis.ParseURL; for Cluster
// redis.ParseClusterURL); they override the defaults derived from
// Options.Timeout. Every problem is reported at once.
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
		u.Scheme = "redis" // go on, to report the other problems too
	}
	q := u.Query()
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
	master := o.SentinelMaster
	if m := q.Get("sentinel_master"); m != "" {
		if o.SentinelMaster != "" && o.SentinelMaster != m {
			errs = append(errs, fmt.Errorf("redis URL: sentinel_master %q differs from --redis-sentinel-master %q", m, o.SentinelMaster))
		}
		master = m
	}
	forceCluster := false
	if c := q.Get("cluster"); c != "" {
		force, err := strconv.ParseBool(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("redis URL: cluster=%q: must be true or false", c))
		}
		forceCluster = force
	}
	p.cluster = master == "" && (len(addrs) > 1 || forceCluster)

	// go-redis's parameters: each checked on its own, so every bad one is
	// reported, then all parsed together by go-redis.
	driver := url.Values{}
	for name, vs := range q {
		if slices.Contains(ownParams, name) {
			continue
		}
		if why, ok := refusedParams[name]; ok {
			errs = append(errs, fmt.Errorf("redis URL: parameter %q is not supported: %s", name, why))
			continue
		}
		probe := url.URL{Scheme: u.Scheme, Host: "h", RawQuery: url.Values{name: vs}.Encode()}
		if _, err := parseDriverURL(probe.String(), p.cluster); err != nil {
			if strings.Contains(err.Error(), "unexpected option") {
				err = fmt.Errorf("unknown parameter %q (tokengate's: %s; or one of go-redis's, e.g. pool_size, dial_timeout, read_timeout)",
					name, strings.Join(ownParams, ", "))
			}
			errs = append(errs, fmt.Errorf("redis URL: %w", err))
			continue
		}
		driver[name] = vs
	}
	base := url.URL{Scheme: u.Scheme, User: u.User, Host: net.JoinHostPort(hostPort(addrs[0])), RawQuery: driver.Encode()}
	if !p.cluster {
		base.Path = u.Path
	} else if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		errs = append(errs, errors.New("redis URL: Redis Cluster has only database 0"))
	}
	if !p.cluster && errors.Is(validDBPath(u.Path), errBadDB) {
		errs = append(errs, fmt.Errorf("redis URL: path %q: must be a database number", u.Path))
		base.Path = ""
	}
	d, err := parseDriverURL(base.String(), p.cluster)
	if err != nil {
		errs = append(errs, fmt.Errorf("redis URL: %w", err))
	} else {
		p.opts = d
	}
	p.opts.Addrs = addrs
	p.opts.MasterName = master
	p.opts.IsClusterMode = forceCluster
	p.opts.SentinelUsername = q.Get("sentinel_username")
	p.opts.SentinelPassword = q.Get("sentinel_password")
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
	if o.PoolSize != 0 && q.Has("pool_size") && p.opts.PoolSize != o.PoolSize {
		errs = append(errs, fmt.Errorf("redis URL: pool_size %d differs from the pool size option %d", p.opts.PoolSize, o.PoolSize))
	}

	p.timeout = o.Timeout
	if p.timeout == 0 {
		p.timeout = DefaultTimeout
	}
	// Every wait is bounded by the operation's timeout, so an outage makes
	// the refresher answer 503 quickly instead of piling requests up. A
	// go-redis parameter in the URL overrides its default here; the
	// operation's own deadline (ContextTimeoutEnabled) still applies.
	defaults := []struct {
		param string
		set   func()
	}{
		{"dial_timeout", func() { p.opts.DialTimeout = p.timeout }},
		{"read_timeout", func() { p.opts.ReadTimeout = p.timeout }},
		{"write_timeout", func() { p.opts.WriteTimeout = p.timeout }},
		{"pool_timeout", func() { p.opts.PoolTimeout = p.timeout }},
		{"max_retries", func() { p.opts.MaxRetries = 1 }},
		{"min_retry_backoff", func() { p.opts.MinRetryBackoff = 8 * time.Millisecond }},
		{"max_retry_backoff", func() { p.opts.MaxRetryBackoff = 64 * time.Millisecond }},
		{"dialer_retries", func() { p.opts.DialerRetries = 1 }},
		{"pool_size", func() { p.opts.PoolSize = o.PoolSize }},
	}
	for _, d := range defaults {
		if !driver.Has(d.param) {
			d.set()
		}
	}
	p.opts.ContextTimeoutEnabled = true
	return p, errors.Join(errs...)
}

var errBadDB = errors.New("bad database")

// validDBPath accepts "", "/" and "/N" (N ≥ 0).
func validDBPath(path string) error {
	db := strings.Trim(path, "/")
	if db == "" {
		return nil
	}
	if n, err := strconv.Atoi(db); err != nil || n < 0 {
		return errBadDB
	}
	return nil
}

func hostPort(addr string) (string, string) {
	h, port, _ := net.SplitHostPort(addr)
	return h, port
}

// parseDriverURL parses raw with go-redis's own parser: redis.ParseURL, or
// redis.ParseClusterURL for Cluster, and returns what it set.
func parseDriverURL(raw string, cluster bool) (redis.UniversalOptions, error) {
	if cluster {
		c, err := redis.ParseClusterURL(raw)
		if err != nil {
			return redis.UniversalOptions{}, err
		}
		return redis.UniversalOptions{
			ClientName: c.ClientName, Protocol: c.Protocol, Username: c.Username, Password: c.Password,
			MaxRedirects: c.MaxRedirects, MaxRetries: c.MaxRetries, MinRetryBackoff: c.MinRetryBackoff, MaxRetryBackoff: c.MaxRetryBackoff,
			DialTimeout: c.DialTimeout, DialerRetries: c.DialerRetries, DialerRetryTimeout: c.DialerRetryTimeout,
			ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout,
			PoolFIFO: c.PoolFIFO, PoolSize: c.PoolSize, MaxConcurrentDials: c.MaxConcurrentDials, PoolTimeout: c.PoolTimeout,
			MinIdleConns: c.MinIdleConns, MaxIdleConns: c.MaxIdleConns, MaxActiveConns: c.MaxActiveConns,
			PipelinePoolSize: c.PipelinePoolSize, PipelineReadBufferSize: c.PipelineReadBufferSize, PipelineWriteBufferSize: c.PipelineWriteBufferSize,
			ConnMaxIdleTime: c.ConnMaxIdleTime, ConnMaxLifetime: c.ConnMaxLifetime, ConnMaxLifetimeJitter: c.ConnMaxLifetimeJitter,
			FailingTimeoutSeconds: c.FailingTimeoutSeconds,
		}, nil
	}
	s, err := redis.ParseURL(raw)
	if err != nil {
		return redis.UniversalOptions{}, err
	}
	return redis.UniversalOptions{
		ClientName: s.ClientName, Protocol: s.Protocol, Username: s.Username, Password: s.Password, DB: s.DB,
		MaxRetries: s.MaxRetries, MinRetryBackoff: s.MinRetryBackoff, MaxRetryBackoff: s.MaxRetryBackoff,
		DialTimeout: s.DialTimeout, DialerRetries: s.DialerRetries, DialerRetryTimeout: s.DialerRetryTimeout,
		ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout,
		PoolFIFO: s.PoolFIFO, PoolSize: s.PoolSize, MaxConcurrentDials: s.MaxConcurrentDials, PoolTimeout: s.PoolTimeout,
		MinIdleConns: s.MinIdleConns, MaxIdleConns: s.MaxIdleConns, MaxActiveConns: s.MaxActiveConns,
		PipelinePoolSize: s.PipelinePoolSize, PipelineReadBufferSize: s.PipelineReadBufferSize, PipelineWriteBufferSize: s.PipelineWriteBufferSize,
		ConnMaxIdleTime: s.ConnMaxIdleTime, ConnMaxLifetime: s.ConnMaxLifetime, ConnMaxLifetimeJitter: s.ConnMaxLifetimeJitter,
	}, nil
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
