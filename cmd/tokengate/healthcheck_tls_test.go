package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tlsfiles/tlstest"
)

// TestHealthcheckTLS probes real HTTPS and gRPC-over-TLS servers that
// require a client certificate (mutual TLS), as the chart's exec probes do.
func TestHealthcheckTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test ca")
	caFile := filepath.Join(dir, "ca.crt")
	tlstest.WriteFile(t, caFile, ca.PEM)
	certFile, keyFile := ca.Issue(t, "service", "tokengate-extauthz").Write(t, dir, "tls")
	otherCA := filepath.Join(dir, "other.crt")
	tlstest.WriteFile(t, otherCA, tlstest.NewCA(t, "other").PEM)
	r, err := tlsfiles.New(tlsfiles.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })}
	go hs.Serve(tlsListener(httpLn, r))
	t.Cleanup(func() { hs.Close() })

	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(r.ServerConfig("h2"))))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(grpcLn)
	t.Cleanup(gs.Stop)

	https := "https://" + httpLn.Addr().String() + "/readyz"
	grpcs := "grpcs://" + grpcLn.Addr().String()
	mtls := []string{"--tls-ca-file", caFile, "--tls-cert-file", certFile, "--tls-key-file", keyFile}
	runHealthchecks(t, []healthcheckCase{
		{name: "https mtls", args: append([]string{https}, mtls...)},
		{name: "https mtls via env", args: []string{https}, env: map[string]string{
			"TOKENGATE_HEALTHCHECK_TLS_CA_FILE": caFile, "TOKENGATE_HEALTHCHECK_TLS_CERT_FILE": certFile, "TOKENGATE_HEALTHCHECK_TLS_KEY_FILE": keyFile}},
		{name: "https server name", args: append([]string{https, "--tls-server-name", "tokengate-extauthz"}, mtls...)},
		{name: "https wrong server name", args: append([]string{https, "--tls-server-name", "elsewhere"}, mtls...), wantErr: "certificate is valid for"},
		{name: "https without client certificate", args: []string{https, "--tls-ca-file", caFile}, wantErr: "certificate required"},
		{name: "https unknown CA", args: []string{https, "--tls-ca-file", otherCA, "--tls-cert-file", certFile, "--tls-key-file", keyFile}, wantErr: "unknown authority"},
		{name: "grpcs mtls", args: append([]string{grpcs}, mtls...)},
		{name: "grpcs without client certificate", args: []string{"--timeout", "2s", grpcs, "--tls-ca-file", caFile}, wantErr: "Unavailable"},
		{name: "grpc plaintext to tls", args: []string{"--timeout", "2s", "grpc://" + grpcLn.Addr().String()}, wantErr: "Unavailable"},
		{name: "tls flags on http", args: append([]string{"http://" + httpLn.Addr().String()}, mtls...), wantErr: "need an https:// or grpcs:// target", wantUsage: true},
		{name: "missing ca file", args: []string{https, "--tls-ca-file", filepath.Join(dir, "nope")}, wantErr: "tls-ca-file", wantUsage: true},
		{name: "cert without key", args: []string{https, "--tls-cert-file", certFile}, wantErr: "give both or neither", wantUsage: true},
	})
}

func tlsListener(ln net.Listener, r *tlsfiles.Reloader) net.Listener {
	return serve.TLSListener(ln, r.ServerConfig("h2", "http/1.1"))
}
