package extauthz

import (
	"errors"
	"testing"

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
