package refresher_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// A registry that already holds the refresher's series makes NewServer
// return an error naming the clash, never panic: an embedder wiring two
// servers onto one registry gets an error to report.
func TestMetricsRegistrationErrorIsReturned(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	keys := generateKeys(t)
	if _, err := refresher.NewServer(testConfig(), refresher.Options{Store: memstore.New(), Keys: keys, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	_, err := refresher.NewServer(testConfig(), refresher.Options{Store: memstore.New(), Keys: keys, Registry: reg})
	if err == nil {
		t.Fatal("second server on the same registry: no error")
	}
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("error %v does not wrap prometheus.AlreadyRegisteredError", err)
	}
}

// Without a Registry, each server has its own and serves it on /metrics.
func TestMetricsPrivateRegistry(t *testing.T) {
	t.Parallel()
	keys := generateKeys(t)
	for range 2 {
		if _, err := refresher.NewServer(testConfig(), refresher.Options{Store: memstore.New(), Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
}

// Every labelled counter has each of its series from start-up, at 0, so a
// rate() or an alert sees a zero instead of no data until the first event.
func TestMetricsLabelledCountersStartAtZero(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	mfs, err := rg.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"tokengate_refresher_replays_total": {"source=lru", "source=shared", "source=store"},
		"tokengate_refresher_refresh_failures_total": {"reason=dpop_key_mismatch", "reason=expired", "reason=invalid_dpop_proof", "reason=malformed",
			"reason=replay_unavailable", "reason=reuse_detected", "reason=revoked", "reason=unknown", "reason=use_dpop_nonce"},
		"tokengate_refresher_revocations_total":  {"reason=admin", "reason=reuse_detected", "reason=sign_out", "reason=subject"},
		"tokengate_refresher_rate_limited_total": {"scope=ip", "scope=session"},
		"tokengate_refresher_store_errors_total": {"op=create_session", "op=get_session", "op=get_token", "op=patch_claims",
			"op=revocations", "op=revoke_session", "op=revoke_subject", "op=rotate"},
	}
	got := map[string][]string{}
	for _, mf := range mfs {
		if _, ok := want[mf.GetName()]; !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %v at start-up, want 0", mf.GetName(), ls, v)
			}
			got[mf.GetName()] = append(got[mf.GetName()], strings.Join(ls, ","))
		}
	}
	for name := range got {
		slices.Sort(got[name])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("series at start-up (-want +got):\n%s", diff)
	}
}
