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

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			fmt.Fprintln(w, "ok")
		case "/redirect":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.Error(w, "store unreachable", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(ready.Close)

	grpcAddr := startHealthServer(t)

	// A port nothing listens on.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	runHealthchecks(t, []healthcheckCase{
		{name: "http ready", args: []string{ready.URL + "/readyz"}},
		{name: "http ready via flag", args: []string{"--url", ready.URL + "/readyz"}},
		{name: "http ready via env", env: map[string]string{"TOKENGATE_HEALTHCHECK_URL": ready.URL + "/readyz"}},
		{name: "http 503", args: []string{ready.URL + "/not-ready"}, wantErr: "503 Service Unavailable: store unreachable"},
		{name: "http redirect is not healthy", args: []string{ready.URL + "/redirect"}, wantErr: "302 Found"},
		{name: "http refused", args: []string{"http://" + deadAddr + "/readyz"}, wantErr: "connection refused"},
		{name: "grpc serving", args: []string{"grpc://" + grpcAddr}},
		{name: "grpc service not serving", args: []string{"--grpc-service", "extauthz", "grpc://" + grpcAddr}, wantErr: "NOT_SERVING"},
		{name: "grpc unknown service", args: []string{"--grpc-service", "nope", "grpc://" + grpcAddr}, wantErr: "NotFound"},
		{name: "grpc refused", args: []string{"--timeout", "2s", "grpc://" + deadAddr}, wantErr: "Unavailable"},
		{name: "no target", wantErr: "needs a target", wantUsage: true},
		{name: "two targets", args: []string{"--url", ready.URL, ready.URL}, wantErr: "one target", wantUsage: true},
		{name: "bad scheme", args: []string{"tcp://127.0.0.1:1"}, wantErr: `scheme "tcp"`, wantUsage: true},
		{name: "no host", args: []string{"/readyz"}, wantErr: "not a URL with a host", wantUsage: true},
		{name: "bad timeout", args: []string{"--timeout", "0s", ready.URL}, wantErr: "--timeout must be positive", wantUsage: true},
	})
}

// healthcheckCase is one `tokengate healthcheck` run: its arguments and
// environment, and the error it must give (none: a "healthy" line).
type healthcheckCase struct {
	name      string
	args      []string
	env       map[string]string
	wantErr   string
	wantUsage bool
}

// runHealthchecks runs each case as a parallel subtest.
func runHealthchecks(t *testing.T, cases []healthcheckCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			err := run(context.Background(), append([]string{"healthcheck"}, tc.args...), getenv, &stdout, &stderr)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("healthcheck: %v", err)
				}
				if !strings.HasPrefix(stdout.String(), "healthy: ") {
					t.Errorf("stdout = %q, want a healthy line", stdout.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("healthcheck error = %v, want one containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, errUsage); got != tc.wantUsage {
				t.Errorf("errors.Is(err, errUsage) = %v, want %v (exit 2 vs 1)", got, tc.wantUsage)
			}
		})
	}
}

// startHealthServer serves grpc.health.v1 on loopback ("" serving,
// "extauthz" not) and returns its address.
func startHealthServer(t *testing.T) string {
	t.Helper()
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
	return ln.Addr().String()
}
