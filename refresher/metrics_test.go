package refresher_test

import (
	"errors"
	"testing"

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
