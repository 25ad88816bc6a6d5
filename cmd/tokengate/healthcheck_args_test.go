package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Flags may follow the URL, and a flag given after it is applied (not
// taken for a second target).
func TestHealthcheckFlagsAfterURL(t *testing.T) {
	t.Parallel()
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	t.Cleanup(ready.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("extauthz", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	grpcURL := "grpc://" + ln.Addr().String()

	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantErr   string
		wantUsage bool
	}{
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"healthcheck"}, tc.args...), func(k string) string { return tc.env[k] }, &stdout, &stderr)
			if tc.wantErr == "" {
				if err != nil || !strings.HasPrefix(stdout.String(), "healthy: ") {
					t.Fatalf("healthcheck = %v, stdout %q", err, stdout.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("healthcheck error = %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, errUsage); got != tc.wantUsage {
				t.Errorf("usage error = %v, want %v", got, tc.wantUsage)
			}
		})
	}
}
