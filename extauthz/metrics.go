package extauthz

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered once per Server on the registry passed in, so
// tests and embedders (tokengate dev) each get their own.
type metrics struct {
	checks          *prometheus.CounterVec
	duration        prometheus.Histogram
	jwksFetches     *prometheus.CounterVec
	jwksKeys        *prometheus.GaugeVec
	jwksLastSuccess *prometheus.GaugeVec
	cacheHits       prometheus.Counter
	cacheMisses     prometheus.Counter
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
		jwksKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_jwks_keys",
			Help: "Usable keys in the provider's current key set.",
		}, []string{"provider"}),
		jwksLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokengate_extauthz_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the provider's last successful key load.",
		}, []string{"provider"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_cache_hits_total",
			Help: "Checks whose token was found in the verified-token cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_extauthz_cache_misses_total",
			Help: "Checks whose token had to be verified (absent, expired or its key gone).",
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.checks, m.duration, m.jwksFetches, m.jwksKeys, m.jwksLastSuccess, m.cacheHits, m.cacheMisses} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
