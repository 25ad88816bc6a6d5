package refresher_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tlsfiles/tlstest"
	"github.com/tokengate/tokengate/refresher"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// TestRunServesMutualTLS runs the refresher with --tls-* files: its one
// listener (API, JWKS, /metrics) answers only clients with a certificate
// of the client CA, and a rotated certificate is served to new
// connections while an open one keeps working.
func TestRunServesMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test ca")
	files := tlsfiles.Files{ClientCAFile: filepath.Join(dir, "ca.crt")}
	files.CertFile, files.KeyFile = ca.Issue(t, "refresher").Write(t, dir, "tls")
	tlstest.WriteFile(t, files.ClientCAFile, ca.PEM)
	clock := fakeclock.New()
	reloader, err := tlsfiles.New(files, tlsfiles.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	bound := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- refresher.Run(ctx, testConfig(), refresher.RunConfig{
			Listen: "127.0.0.1:0", TLS: reloader, OnListening: func(a net.Addr) { bound <- a },
		}, refresher.Options{Store: memstore.New(), Keys: generateKeys(t), Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var addr string
	select {
	case a := <-bound:
		addr = a.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	clientCert := ca.Issue(t, "extauthz").TLS(t)
	client := func(certs ...tls.Certificate) *http.Client {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlstest.Pool(ca), ServerName: "localhost", Certificates: certs}}}
		t.Cleanup(c.CloseIdleConnections)
		return c
	}
	get := func(c *http.Client, path string) (*http.Response, error) {
		resp, err := c.Get("https://" + addr + path)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}

	old := client(clientCert)
	for _, path := range []string{"/healthz", "/.well-known/jwks.json", "/metrics"} {
		resp, err := get(old, path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s over mTLS: %v %v", path, resp, err)
		}
	}
	if _, err := get(client(), "/healthz"); err == nil {
		t.Fatal("a client without a certificate was answered")
	}
	if _, err := get(client(tlstest.NewCA(t, "other").Issue(t, "x").TLS(t)), "/healthz"); err == nil {
		t.Fatal("a client with another CA's certificate was answered")
	}

	next := ca.Issue(t, "refresher rotated")
	tlstest.WriteFile(t, files.CertFile, next.CertPEM)
	tlstest.WriteFile(t, files.KeyFile, next.KeyPEM)
	clock.Advance(tlsfiles.CheckInterval)
	resp, err := get(client(clientCert), "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber.String(); s != next.Serial.String() {
		t.Fatalf("new connection saw serial %s, want the rotated %s", s, next.Serial)
	}
	resp, err = get(old, "/healthz") // the kept-alive connection from before the rotation
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("connection opened before the rotation: %v %v", resp, err)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber.String(); s == next.Serial.String() {
		t.Fatal("the old connection was re-established rather than kept")
	}
}
