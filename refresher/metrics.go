package refresher

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the refresher's Prometheus series. The reason labels use the
// same vocabulary as the JSON error codes and the log fields.
type metrics struct {
	sessions    prometheus.Counter
	rotations   prometheus.Counter
	replays     *prometheus.CounterVec // source: lru, shared, store
	reuse       prometheus.Counter
	failures    *prometheus.CounterVec // reason: unknown, expired, revoked, malformed, reuse_detected, replay_unavailable, dpop_key_mismatch, invalid_dpop_proof, use_dpop_nonce
	revocations *prometheus.CounterVec // reason: sign_out, admin, subject, reuse_detected
	rateLimited *prometheus.CounterVec // scope: ip, session
	// rateLimitErrors: shared rate-limit calls that failed (fail open).
	rateLimitErrors *prometheus.CounterVec // scope: ip, session
	storeLatency    *prometheus.HistogramVec
	storeErrors     *prometheus.CounterVec // op: storeOps
}

// storeOps are the op label values of the store series: one per Store
// method the issuer calls.
var storeOps = []string{"create_session", "get_session", "get_token", "rotate", "revoke_session", "revoke_subject", "patch_claims", "revocations"}

// newMetrics registers the series on reg; an error (a name already
// registered there) is returned, never a panic.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_refresher_sessions_created_total", Help: "Sessions started (POST /v1/sessions).",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_refresher_rotations_total", Help: "Refresh tokens rotated into a new pair.",
		}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_replays_total",
			Help: "Refreshes answered with an already issued pair (source: lru, shared = joined a concurrent rotation, store = another replica's rotation).",
		}, []string{"source"}),
		reuse: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokengate_refresher_reuse_detections_total", Help: "Rotated refresh tokens presented after the grace window (session revoked).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_refresh_failures_total", Help: "Refreshes refused (invalid_grant, invalid_dpop_proof, use_dpop_nonce), by reason.",
		}, []string{"reason"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_revocations_total", Help: "Sessions revoked, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_rate_limited_total", Help: "Refreshes answered 429, by limit.",
		}, []string{"scope"}),
		rateLimitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_rate_limit_errors_total",
			Help: "Rate-limit checks that failed (the shared limiter's store unreachable) and let the request through, by limit.",
		}, []string{"scope"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokengate_refresher_store_latency_seconds",
			Help:    "Store call latency by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokengate_refresher_store_errors_total", Help: "Store calls that failed (answered 503), by operation.",
		}, []string{"op"}),
	}
	// Every label value exists from the start, so dashboards and alerts see
	// zeros instead of missing series.
	for _, v := range []string{"lru", "shared", "store"} {
		m.replays.WithLabelValues(v)
	}
	for _, v := range []string{"unknown", "expired", "revoked", "malformed", "reuse_detected", "replay_unavailable",
		"dpop_key_mismatch", "invalid_dpop_proof", "use_dpop_nonce"} {
		m.failures.WithLabelValues(v)
	}
	for _, v := range []string{"sign_out", "admin", "subject", "reuse_detected"} {
		m.revocations.WithLabelValues(v)
	}
	for _, v := range []string{"ip", "session"} {
		m.rateLimited.WithLabelValues(v)
		m.rateLimitErrors.WithLabelValues(v)
	}
	for _, v := range storeOps {
		m.storeErrors.WithLabelValues(v)
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.sessions, m.rotations, m.replays, m.reuse, m.failures, m.revocations, m.rateLimited, m.rateLimitErrors, m.storeLatency, m.storeErrors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

func (m *metrics) observeStore(op string, start time.Time, err error) {
	m.storeLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}
