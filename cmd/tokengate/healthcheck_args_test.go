package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Flags may follow the URL, and a flag given after it is applied (not
// taken for a second target).
func TestHealthcheckFlagsAfterURL(t *testing.T) {
	t.Parallel()
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	t.Cleanup(ready.Close)
	grpcURL := "grpc://" + startHealthServer(t)

	runHealthchecks(t, []healthcheckCase{
		{name: "timeout after the URL", args: []string{ready.URL, "--timeout", "2s"}},
		{name: "flags on both sides", args: []string{"--timeout", "2s", grpcURL, "--grpc-service", ""}},
		{name: "a flag after the URL is applied", args: []string{grpcURL, "--grpc-service", "extauthz"}, wantErr: "NOT_SERVING"},
		{name: "a flag after the URL beats the environment", args: []string{grpcURL, "--grpc-service", ""},
			env: map[string]string{"TOKENGATE_HEALTHCHECK_GRPC_SERVICE": "extauthz"}},
		{name: "bad flag after the URL", args: []string{ready.URL, "--timeout", "0s"}, wantErr: "--timeout must be positive", wantUsage: true},
		{name: "unknown flag after the URL", args: []string{ready.URL, "--bogus"}, wantErr: "bogus", wantUsage: true},
		{name: "two targets around a flag", args: []string{ready.URL, "--timeout", "2s", ready.URL}, wantErr: "one target", wantUsage: true},
		{name: "after -- only arguments", args: []string{"--", ready.URL, "--timeout"}, wantErr: "one target", wantUsage: true},
		{name: "target after --", args: []string{"--timeout", "2s", "--", ready.URL}},
	})
}
