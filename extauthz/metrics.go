package extauthz

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered once per Server on the registry passed in, so
// tests and embedders (tokengate dev) each get their own.
type metrics struct {
	checks *prometheus.CounterVec
	// checkCounters are the checks_total series of every decision and
	// reason, resolved once: WithLabelValues hashes the labels and takes a
	// lock on each call, which showed in the cached Check's profile.
	checkCounters   map[checkLabels]prometheus.Counter
	duration        prometheus.Histogram
	jwksFetches     *prometheus.CounterVec
	jwksKeys        *prometheus.GaugeVec
	discoveryFetch  *prometheus.CounterVec
	jwksLastSuccess *prometheus.GaugeVec
	unknownKID      *prometheus.CounterVec
	cacheHits       prometheus.Counter
	cacheMisses     prometheus.Counter
	cacheBytes      prometheus.Gauge
	cacheEntries    prometheus.Gauge
	logDropped      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_extauthz_checks_total",
			Help: "Checks answered, by decision (allow, deny, error) and reason.",
		}, []string{"decision", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokengate_extauthz_check_duration_seconds",
			Help:    "Time to decide one check (gRPC or HTTP), excluding transport.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_extauthz_jwks_fetches_total",
			Help: "JWKS loads by provider and result (ok, fetch_error, invalid).",
		}, []string{"provider", "result"}),
		discoveryFetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_extauthz_discovery_fetches_total",
			Help: "OIDC discovery document loads by provider and result (ok, fetch_error, invalid); providers with discovery: true only.",
		}, []string{"provider", "result"}),
		jwksKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_jwks_keys",
			Help: "Usable keys in the provider's current key set.",
		}, []string{"provider"}),
		jwksLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the provider's last successful key load.",
		}, []string{"provider"}),
		unknownKID: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_extauthz_jwks_unknown_kid_total",
			Help: "Checks whose token named a kid not in the key set, by provider and outcome: found (after a refetch), unknown (invalid_token), pending (UNAVAILABLE: the refetch is running, limited or failed).",
		}, []string{"provider", "outcome"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_cache_hits_total",
			Help: "Checks whose token was found in the verified-token cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_cache_misses_total",
			Help: "Checks whose token had to be verified (absent, expired or its key gone).",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_cache_bytes",
			Help: "Estimated memory held by the verified-token cache (bounded by cache.max_bytes).",
		}),
		cacheEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_cache_entries",
			Help: "Tokens in the verified-token cache (bounded by cache.size).",
		}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_log_lines_dropped_total",
			Help: "Check log lines (denials, failures) not written because logs.denials_per_second was reached; the checks are still counted in checks_total.",
		}),
	}
	m.checkCounters = map[checkLabels]prometheus.Counter{}
	for _, l := range []checkLabels{
		{decisionAllow, ReasonVerified}, {decisionAllow, ReasonAnonymous}, {decisionAllow, ReasonPreflight},
		{decisionDeny, ReasonMissingToken}, {decisionDeny, ReasonTokenExpired}, {decisionDeny, ReasonInvalidToken},
		{decisionDeny, ReasonTokenRevoked}, {decisionDeny, ReasonInsufficientScope}, {decisionDeny, ReasonUnknownApp},
		{decisionDeny, ReasonInvalidDPoPProof}, {decisionDeny, ReasonUseDPoPNonce}, {decisionDeny, ReasonTokenUnbound},
		{decisionError, ReasonUnavailable}, {decisionError, ReasonForwardAuthHeaders}, {decisionError, ReasonRevocationsUnavailable},
	} {
		m.checkCounters[l] = m.checks.WithLabelValues(l.decision, string(l.reason))
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.checks, m.duration, m.jwksFetches, m.discoveryFetch, m.jwksKeys, m.jwksLastSuccess, m.unknownKID, m.cacheHits, m.cacheMisses, m.cacheBytes, m.cacheEntries, m.logDropped} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

// provider gives a key source's labelled counters their series at 0, for
// every result and outcome, so an alert on fetch errors or unknown kids
// sees a zero from start-up instead of no data.
func (m *metrics) provider(name string) {
	for _, r := range []string{"ok", "fetch_error", "invalid"} {
		m.jwksFetches.WithLabelValues(name, r)
	}
	for _, o := range []string{"found", "unknown", "pending"} {
		m.unknownKID.WithLabelValues(name, o)
	}
}

type checkLabels struct {
	decision string
	reason   Reason
}

// countCheck adds one to checks_total{decision, reason}.
func (m *metrics) countCheck(decision string, reason Reason) {
	if c, ok := m.checkCounters[checkLabels{decision, reason}]; ok {
		c.Inc()
		return
	}
	m.checks.WithLabelValues(decision, string(reason)).Inc() // a pair not listed above
}
