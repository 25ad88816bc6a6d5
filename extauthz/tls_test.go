package extauthz

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/internal/serve"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tlsfiles/tlstest"
)

// tlsRun is extauthz.Run serving both listeners over mutual TLS.
type tlsRun struct {
	ca                 *tlstest.CA
	files              tlsfiles.Files
	reloader           *tlsfiles.Reloader
	clock              *fakeclock.Clock
	grpcAddr, httpAddr string
	client             tls.Certificate // signed by the client CA
}

func startTLSRun(t *testing.T, mod ...func(*RunConfig)) *tlsRun {
	t.Helper()
	dir := t.TempDir()
	r := &tlsRun{ca: tlstest.NewCA(t, "test ca"), clock: fakeclock.New()}
	r.files.CertFile, r.files.KeyFile = r.ca.Issue(t, "extauthz").Write(t, dir, "tls")
	r.files.ClientCAFile = filepath.Join(dir, "ca.crt")
	tlstest.WriteFile(t, r.files.ClientCAFile, r.ca.PEM)
	r.client = r.ca.Issue(t, "envoy").TLS(t)
	var err error
	if r.reloader, err = tlsfiles.New(r.files, tlsfiles.Options{Now: r.clock.Now}); err != nil {
		t.Fatal(err)
	}
	type addrs struct{ grpc, http net.Addr }
	bound := make(chan addrs, 1)
	rc := RunConfig{
		GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", TLS: r.reloader,
		OnListening: func(g, h net.Addr) { bound <- addrs{g, h} },
	}
	for _, m := range mod {
		m(&rc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, baseConfig(t, newTestKey(t, "ES256", "k1")), rc, Options{Registry: prometheus.NewRegistry()})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-bound:
		r.grpcAddr, r.httpAddr = a.grpc.String(), a.http.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return r
}

func (r *tlsRun) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: tlstest.Pool(r.ca), ServerName: "localhost", Certificates: certs}
}

func (r *tlsRun) grpcConn(t *testing.T, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// healthOver asks grpc.health.v1 over conn and returns the serial of the
// certificate the server presented.
func healthOver(t *testing.T, conn *grpc.ClientConn) (string, error) {
	t.Helper()
	var p peer.Peer
	_, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return "", err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("peer auth info %T, want TLS", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber.String(), nil
}

func httpsGet(r *tlsRun, path string, certs ...tls.Certificate) (*http.Response, error) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: r.clientTLS(certs...), ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + r.httpAddr + path)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func TestRunServesMutualTLS(t *testing.T) {
	t.Parallel()
	r := startTLSRun(t)

	if _, err := healthOver(t, r.grpcConn(t, credentials.NewTLS(r.clientTLS(r.client)))); err != nil {
		t.Fatalf("gRPC over mTLS: %v", err)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := httpsGet(r, path, r.client)
		if err != nil {
			t.Fatalf("GET %s over mTLS: %v", path, err)
		}
		if resp.StatusCode != http.StatusOK || resp.TLS == nil {
			t.Fatalf("GET %s: %s, tls %v", path, resp.Status, resp.TLS != nil)
		}
	}

	// Refused: no client certificate, a certificate of another CA, plaintext.
	other := tlstest.NewCA(t, "other ca").Issue(t, "intruder").TLS(t)
	for name, creds := range map[string]credentials.TransportCredentials{
		"grpc without client certificate": credentials.NewTLS(r.clientTLS()),
		"grpc with another CA's client":   credentials.NewTLS(r.clientTLS(other)),
		"grpc plaintext":                  insecure.NewCredentials(),
	} {
		if _, err := healthOver(t, r.grpcConn(t, creds)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := httpsGet(r, "/healthz"); err == nil {
		t.Error("https without client certificate: accepted")
	}
	if _, err := httpsGet(r, "/healthz", other); err == nil {
		t.Error("https with another CA's client certificate: accepted")
	}
	if resp, err := http.Get("http://" + r.httpAddr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Error("plaintext HTTP answered 200 on a TLS listener")
	}
}

func TestRunRotatesCertificateWhileConnected(t *testing.T) {
	t.Parallel()
	r := startTLSRun(t)
	old := r.grpcConn(t, credentials.NewTLS(r.clientTLS(r.client)))
	first, err := healthOver(t, old)
	if err != nil {
		t.Fatal(err)
	}

	next := r.ca.Issue(t, "extauthz rotated")
	tlstest.WriteFile(t, r.files.CertFile, next.CertPEM)
	tlstest.WriteFile(t, r.files.KeyFile, next.KeyPEM)
	r.clock.Advance(tlsfiles.CheckInterval) // the next handshake looks at the files

	got, err := healthOver(t, r.grpcConn(t, credentials.NewTLS(r.clientTLS(r.client))))
	if err != nil {
		t.Fatal(err)
	}
	if got != next.Serial.String() || got == first {
		t.Fatalf("new gRPC connection saw serial %s, want the rotated %s", got, next.Serial)
	}
	resp, err := httpsGet(r, "/healthz", r.client)
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber.String(); s != next.Serial.String() {
		t.Fatalf("new HTTPS connection saw serial %s, want %s", s, next.Serial)
	}
	// The connection opened before the rotation keeps working, on its
	// original certificate.
	if s, err := healthOver(t, old); err != nil || s != first {
		t.Fatalf("connection opened before the rotation: serial %s, err %v", s, err)
	}
}

// A client that opens a TCP connection to a TLS listener and never sends
// its ClientHello holds nothing: the handshake is bounded by
// --http-read-header-timeout / --grpc-handshake-timeout, as for plaintext.
func TestRunCutsSilentTLSClients(t *testing.T) {
	t.Parallel()
	const limit = 200 * time.Millisecond
	r := startTLSRun(t, func(rc *RunConfig) {
		rc.HTTPLimits = serve.DefaultHTTPLimits
		rc.HTTPLimits.ReadHeaderTimeout, rc.HTTPLimits.ReadTimeout = limit, limit
		rc.GRPCLimits = serve.DefaultGRPCLimits
		rc.GRPCLimits.HandshakeTimeout = limit
	})
	for name, addr := range map[string]string{"http": r.httpAddr, "grpc": r.grpcAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Generous bound: the server must close long before it.
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: a silent TLS client was still connected after 10s (limit %v)", name, limit)
		}
	}
}
