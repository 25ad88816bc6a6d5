package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokengate/tokengate/internal/revocationfeed"
	"github.com/tokengate/tokengate/internal/tracing"
)

// RevocationFeedConfig configures a RevocationFeed.
type RevocationFeedConfig struct {
	// URL of the refresher's revocation feed (--revocations-url). A URL
	// without a path gets /v1/revocations, so the refresher's base URL works.
	URL string
	// AdminToken is the refresher's admin bearer token (--admin-token).
	AdminToken string
	// Client makes the requests; nil uses a client without an overall
	// timeout (each request is bounded by Wait plus RequestTimeout instead).
	Client *http.Client
	// Logger for JSON logs; nil discards.
	Logger *slog.Logger
	// Registry receives the feed's metrics; nil uses a private registry.
	Registry prometheus.Registerer
	// Clock is the time entries expire by (their until); nil is time.Now.
	Clock func() time.Time
	// Wait is the long-poll wait asked of the refresher (default 20s, below
	// the 30s idle timeout common in proxies).
	Wait time.Duration
	// RequestTimeout is added to Wait to bound one request (default 10s).
	RequestTimeout time.Duration
	// Backoff is the first retry delay after a failure, doubling up to
	// MaxBackoff (defaults 250ms and 10s).
	Backoff, MaxBackoff time.Duration
	// FailOpen (--revocations-fail-open) lets tokens that carry a sid be
	// decided without the denylist until the feed has synced once. Off by
	// default: until then they get UNAVAILABLE, because a session revoked
	// before extauthz started would otherwise be let through.
	FailOpen bool
	// Tracer, when set, records a span per feed request
	// (extauthz.PollRevocations). Run sets the server's when nil.
	Tracer trace.Tracer
}

// RevocationFeed keeps a local denylist of revoked sessions from the
// refresher's feed (GET /v1/revocations?after=CURSOR, long-polled). It is
// the server's Denylist: Revoked is a lock-free map lookup on the check
// path. Each sid is denied until its entry's until, when every access token
// of that session has expired anyway.
//
// Fail mode: Ready stays false until the first complete load, and the
// server answers tokens that carry a sid with UNAVAILABLE until then (unless
// FailOpen), so a starting extauthz never allows a session revoked before
// it started. Once loaded, when the feed is unreachable the current list is
// kept (already revoked sessions stay denied), the error is counted and
// logged, and the feed retries with backoff; sessions revoked meanwhile are
// denied once it answers again, and their access tokens expire within the
// access-token lifetime regardless.
type RevocationFeed struct {
	cfg     RevocationFeedConfig
	url     string
	logURL  string // url with its password (if any) masked: for logs and errors
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	metrics *feedMetrics

	list   atomic.Pointer[map[string]time.Time] // copy-on-write; read on every check
	ready  atomic.Bool
	synced chan struct{}
	once   sync.Once
}

var _ Denylist = (*RevocationFeed)(nil)

// NewRevocationFeed checks the configuration and registers the metrics; Run
// starts fetching.
func NewRevocationFeed(cfg RevocationFeedConfig) (*RevocationFeed, error) {
	var errs []error
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		errs = append(errs, errors.New("revocations-url: required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("revocations-url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("revocations-url %q: must be an absolute http or https URL", cfg.URL))
	}
	if cfg.AdminToken == "" {
		errs = append(errs, errors.New("admin-token: required with a revocations URL (the feed is an admin endpoint)"))
	}
	for name, d := range map[string]time.Duration{"wait": cfg.Wait, "request timeout": cfg.RequestTimeout, "backoff": cfg.Backoff, "max backoff": cfg.MaxBackoff} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("revocation feed %s %v: must not be negative", name, d))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/revocations"
	}
	cfg.Wait = cmpOr(cfg.Wait, 20*time.Second)
	cfg.RequestTimeout = cmpOr(cfg.RequestTimeout, 10*time.Second)
	cfg.Backoff = cmpOr(cfg.Backoff, 250*time.Millisecond)
	cfg.MaxBackoff = max(cmpOr(cfg.MaxBackoff, 10*time.Second), cfg.Backoff)
	f := &RevocationFeed{
		cfg:    cfg,
		url:    u.String(),
		logURL: u.Redacted(),
		client: cfg.Client,
		log:    cfg.Logger,
		now:    cfg.Clock,
		synced: make(chan struct{}),
	}
	if f.client == nil {
		f.client = &http.Client{}
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if f.metrics, err = newFeedMetrics(reg); err != nil {
		return nil, fmt.Errorf("revocation feed metrics: %w", err)
	}
	empty := map[string]time.Time{}
	f.list.Store(&empty)
	return f, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Revoked reports whether sid is on the denylist at the feed's clock.
func (f *RevocationFeed) Revoked(sid string) bool {
	until, ok := (*f.list.Load())[sid]
	return ok && f.now().Before(until)
}

// Ready reports whether the first complete load has finished. It stays
// true afterwards, through feed outages (the last list is kept).
func (f *RevocationFeed) Ready() bool { return f.ready.Load() }

// FailOpen reports RevocationFeedConfig.FailOpen: the server then decides
// tokens that carry a sid without the denylist until Ready.
func (f *RevocationFeed) FailOpen() bool { return f.cfg.FailOpen }

// Synced is closed when the first complete load has finished.
func (f *RevocationFeed) Synced() <-chan struct{} { return f.synced }

// Run loads the current list, then long-polls for new entries until ctx
// ends. It returns nil when ctx ends; failures are retried, never returned.
func (f *RevocationFeed) Run(ctx context.Context) error {
	cursor := ""
	backoff := f.cfg.Backoff
	failing := "" // the kind of the current failure (feedFailure), "" when none
	for ctx.Err() == nil {
		// Until the first load is complete, ask without waiting so Ready
		// turns true as soon as the whole retained feed is in.
		wait := f.cfg.Wait
		if !f.ready.Load() {
			wait = 0
		}
		pctx, span := startSpan(ctx, f.cfg.Tracer, spanPollRevocations, trace.SpanKindClient)
		resp, err := f.fetch(pctx, cursor, wait)
		if span != nil {
			span.SetAttributes(attribute.Int(attrEntries, len(resp.Revoked)))
			endSpan(span, err != nil, feedFailure(err))
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			f.metrics.up.Set(0)
			// Logged once when a failure starts or changes kind, then at debug.
			switch kind := feedFailure(err); kind {
			case failing:
				f.log.DebugContext(ctx, "revocation feed still failing", "error", err.Error(), "retry_in", backoff.String())
			case "unauthorized":
				// Not an outage: the admin tokens differ, and no retry will
				// fix that until someone does.
				f.log.ErrorContext(ctx, "revocation feed unauthorized: the admin token was refused; keeping the current denylist",
					"url", f.logURL, "error", err.Error(), "entries", len(*f.list.Load()))
				failing = kind
			default:
				f.log.WarnContext(ctx, "revocation feed unreachable; keeping the current denylist", "url", f.logURL, "error", err.Error(), "entries", len(*f.list.Load()))
				failing = kind
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, f.cfg.MaxBackoff)
			continue
		}
		if failing != "" {
			f.log.InfoContext(ctx, "revocation feed reachable again", "url", f.logURL)
			failing = ""
		}
		backoff = f.cfg.Backoff
		f.metrics.up.Set(1)
		f.metrics.lastSuccess.Set(float64(time.Now().Unix()))
		f.apply(resp.Revoked)
		done := len(resp.Revoked) == 0 && resp.Cursor == cursor
		cursor = resp.Cursor
		if done && !f.ready.Load() {
			f.ready.Store(true)
			f.once.Do(func() { close(f.synced) })
			f.log.InfoContext(ctx, "revocation denylist loaded", "entries", len(*f.list.Load()))
		}
	}
	return nil
}

// errFeed classifies failures for the errors metric.
type errFeed struct {
	reason string
	status int // the HTTP status, for reason "status"
	err    error
}

// feedFailure is the kind of a failed fetch for the log: "unauthorized"
// when the refresher refused the admin token (401 or 403), else
// "unreachable".
func feedFailure(err error) string {
	var e *errFeed
	if errors.As(err, &e) && (e.status == http.StatusUnauthorized || e.status == http.StatusForbidden) {
		return "unauthorized"
	}
	return "unreachable"
}

func (e *errFeed) Error() string { return e.err.Error() }
func (e *errFeed) Unwrap() error { return e.err }

func (f *RevocationFeed) fetch(ctx context.Context, cursor string, wait time.Duration) (revocationfeed.Page, error) {
	var out revocationfeed.Page
	ctx, cancel := context.WithTimeout(ctx, wait+f.cfg.RequestTimeout)
	defer cancel()
	q := url.Values{"after": {cursor}, "wait": {wait.String()}}
	sep := "?"
	if strings.Contains(f.url, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+sep+q.Encode(), nil)
	if err != nil {
		return out, f.fail("request", err)
	}
	req.Header.Set("Authorization", "Bearer "+f.cfg.AdminToken)
	req.Header.Set("Accept", "application/json")
	if f.cfg.Tracer != nil {
		tracing.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return out, f.fail("unreachable", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return out, f.fail("unreachable", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The body is the refresher's JSON error; it names no secret.
		f.metrics.errors.WithLabelValues("status").Inc()
		return out, &errFeed{reason: "status", status: resp.StatusCode,
			err: fmt.Errorf("%s answered %d: %.200s", f.logURL, resp.StatusCode, body)}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, f.fail("invalid", fmt.Errorf("%s: invalid feed JSON: %w", f.logURL, err))
	}
	for i, e := range out.Revoked {
		if e.SessionID == "" || e.Until.IsZero() {
			return revocationfeed.Page{}, f.fail("invalid", fmt.Errorf("%s: revoked[%d]: sid and until are required", f.logURL, i))
		}
	}
	return out, nil
}

func (f *RevocationFeed) fail(reason string, err error) error {
	f.metrics.errors.WithLabelValues(reason).Inc()
	return &errFeed{reason: reason, err: err}
}

// apply adds entries and drops the ones whose until has passed, publishing
// a new map so readers never lock.
func (f *RevocationFeed) apply(entries []revocationfeed.Entry) {
	old := *f.list.Load()
	now := f.now()
	next := make(map[string]time.Time, len(old)+len(entries))
	for sid, until := range old {
		if now.Before(until) {
			next[sid] = until
		}
	}
	for _, e := range entries {
		if now.Before(e.Until) && e.Until.After(next[e.SessionID]) {
			next[e.SessionID] = e.Until
		}
	}
	f.list.Store(&next)
	f.metrics.received.Add(float64(len(entries)))
	f.metrics.entries.Set(float64(len(next)))
}

type feedMetrics struct {
	up          prometheus.Gauge
	lastSuccess prometheus.Gauge
	errors      *prometheus.CounterVec
	received    prometheus.Counter
	entries     prometheus.Gauge
}

func newFeedMetrics(reg prometheus.Registerer) (*feedMetrics, error) {
	m := &feedMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_revocations_feed_up",
			Help: "1 when the last request to the revocation feed succeeded, 0 while it fails (the denylist is then kept as it was).",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_revocations_feed_last_success_timestamp_seconds",
			Help: "Unix time of the last successful revocation-feed response.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_extauthz_revocations_feed_errors_total",
			Help: "Failed revocation-feed requests by reason (unreachable, status, invalid, request).",
		}, []string{"reason"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_revocations_received_total",
			Help: "Revocation entries received from the feed.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_revocations_denylist_entries",
			Help: "Sessions currently on the local denylist.",
		}),
	}
	// Every reason exists from start-up, at 0 (an alert on the rate of
	// errors sees a zero, not no data).
	for _, r := range []string{"unreachable", "status", "invalid", "request"} {
		m.errors.WithLabelValues(r)
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.up, m.lastSuccess, m.errors, m.received, m.entries} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
