package extauthz

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// A registry that already holds the series makes NewServer and
// NewRevocationFeed return an error naming the clash, never panic.
func TestMetricsRegistrationErrorIsReturned(t *testing.T) {
	t.Parallel()
	key := newTestKey(t, "ES256", "k1")
	h := newHarness(t, baseConfig(t, key))
	_, err := NewServer(baseConfig(t, key), Options{Registry: h.reg})
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("second server on the same registry: error %v, want a prometheus.AlreadyRegisteredError", err)
	}

	feedCfg := RevocationFeedConfig{URL: "http://127.0.0.1:1", AdminToken: "x", Registry: prometheus.NewRegistry()}
	if _, err := NewRevocationFeed(feedCfg); err != nil {
		t.Fatal(err)
	}
	_, err = NewRevocationFeed(feedCfg)
	if !errors.As(err, &already) {
		t.Fatalf("second feed on the same registry: error %v, want a prometheus.AlreadyRegisteredError", err)
	}
}

// labelledSeries lists the label sets of a family on reg ("k=v,k=v"),
// sorted; with atZero, a series that is not 0 fails.
func labelledSeries(t *testing.T, reg *prometheus.Registry, name string, atZero bool) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if v := m.GetCounter().GetValue(); atZero && v != 0 {
				t.Errorf("%s%v = %v at start-up, want 0", name, ls, v)
			}
			out = append(out, strings.Join(ls, ","))
		}
	}
	slices.Sort(out)
	return out
}

// Every labelled counter whose label values are known at start-up has each
// series from then on, at 0, so a rate() or an alert sees a zero instead
// of no data until the first event.
func TestMetricsLabelledCountersStartAtZero(t *testing.T) {
	t.Parallel()
	t.Run("revocation feed errors", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		if _, err := NewRevocationFeed(RevocationFeedConfig{URL: "http://127.0.0.1:1", AdminToken: "x", Registry: reg}); err != nil {
			t.Fatal(err)
		}
		want := []string{"reason=invalid", "reason=request", "reason=status", "reason=unreachable"}
		if diff := cmp.Diff(want, labelledSeries(t, reg, "tokengate_extauthz_revocations_feed_errors_total", true)); diff != "" {
			t.Errorf("series at start-up (-want +got):\n%s", diff)
		}
	})
	t.Run("unknown kid outcomes and key loads of every provider", func(t *testing.T) {
		t.Parallel()
		key := newTestKey(t, "ES256", "k1")
		cfg := baseConfig(t, key)
		cfg.Providers = append(cfg.Providers, Provider{Name: "second", Issuer: "https://second.example", Audiences: []string{testAudience}, JWKS: jwks(t, key)})
		h := newHarness(t, cfg)
		var kids, loads []string
		for _, p := range []string{testIssuer, "second"} {
			for _, o := range []string{"found", "pending", "unknown"} {
				kids = append(kids, "outcome="+o+",provider="+p)
			}
			for _, r := range []string{"fetch_error", "invalid", "ok"} {
				loads = append(loads, "provider="+p+",result="+r)
			}
		}
		slices.Sort(kids)
		slices.Sort(loads)
		if diff := cmp.Diff(kids, labelledSeries(t, h.reg, "tokengate_extauthz_jwks_unknown_kid_total", true)); diff != "" {
			t.Errorf("unknown kid series at start-up (-want +got):\n%s", diff)
		}
		// The inline key sets have loaded once (ok = 1); the others are at 0.
		if diff := cmp.Diff(loads, labelledSeries(t, h.reg, "tokengate_extauthz_jwks_fetches_total", false)); diff != "" {
			t.Errorf("key load series at start-up (-want +got):\n%s", diff)
		}
	})
}
