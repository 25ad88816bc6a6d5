package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/proctest"
	"github.com/tokengate/tokengate/internal/tlsfiles/tlstest"
)

// healthcheck runs `tokengate healthcheck` in process.
func healthcheck(args ...string) error {
	return run(context.Background(), append([]string{"healthcheck", "--timeout", "2s"}, args...), func(string) string { return "" }, io.Discard, io.Discard)
}

// servedSerial is the serial of the certificate addr presents.
func servedSerial(addr string, ca *tlstest.CA, client tls.Certificate) (string, error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: tlstest.Pool(ca), ServerName: "localhost", Certificates: []tls.Certificate{client}})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// `tokengate extauthz --tls-*` as a process: both listeners require a
// client certificate, `tokengate healthcheck` probes them over https and
// grpcs, and a certificate replaced in place is served without a restart.
func TestExtauthzProcessMutualTLS(t *testing.T) {
	t.Parallel()
	f := newEAFixture(t)
	ca := tlstest.NewCA(t, "test ca")
	caFile := filepath.Join(f.dir, "ca.crt")
	tlstest.WriteFile(t, caFile, ca.PEM)
	certFile, keyFile := ca.Issue(t, "extauthz").Write(t, f.dir, "tls")
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	p := proctest.Start(t, "extauthz", []string{"TOKENGATE_TLS_CLIENT_CA_FILE=" + caFile}, proctest.Tokengate(t),
		"extauthz", "--grpc-listen", grpcAddr, "--http-listen", httpAddr, "--config", f.configPath,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)
	p.WaitTCP(t, httpAddr, 20*time.Second)

	mtls := []string{"--tls-ca-file", caFile, "--tls-cert-file", certFile, "--tls-key-file", keyFile}
	waitFor(t, func() bool {
		return healthcheck(append([]string{"https://" + httpAddr + "/readyz"}, mtls...)...) == nil
	})
	if err := healthcheck(append([]string{"grpcs://" + grpcAddr}, mtls...)...); err != nil {
		t.Fatalf("grpcs healthcheck: %v", err)
	}
	if err := healthcheck(append([]string{"https://" + httpAddr + "/metrics"}, mtls...)...); err != nil {
		t.Fatalf("/metrics over mTLS: %v", err)
	}
	for _, args := range [][]string{
		{"https://" + httpAddr + "/readyz", "--tls-ca-file", caFile},
		{"grpcs://" + grpcAddr, "--tls-ca-file", caFile},
		{"http://" + httpAddr + "/readyz"},
		{"grpc://" + grpcAddr},
	} {
		if err := healthcheck(args...); err == nil {
			t.Errorf("healthcheck %v: healthy without a client certificate", args)
		}
	}

	client := ca.Issue(t, "probe").TLS(t)
	next := ca.Issue(t, "extauthz rotated")
	tlstest.WriteFile(t, certFile, next.CertPEM)
	tlstest.WriteFile(t, keyFile, next.KeyPEM)
	// The files are looked at on a handshake at most once a second.
	waitFor(t, func() bool {
		s, err := servedSerial(httpAddr, ca, client)
		return err == nil && s == next.Serial.String()
	})
	if s, err := servedSerial(grpcAddr, ca, client); err != nil || s != next.Serial.String() {
		t.Fatalf("gRPC listener after rotation: serial %s, err %v; want %s", s, err, next.Serial)
	}
	if !strings.Contains(p.Output(), "tls certificate reloaded") {
		t.Errorf("no reload logged:\n%s", p.Output())
	}
}

// `tokengate refresher --tls-*` serves HTTPS; the probe verifies it.
func TestRefresherProcessTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test ca")
	caFile := filepath.Join(dir, "ca.crt")
	tlstest.WriteFile(t, caFile, ca.PEM)
	certFile, keyFile := ca.Issue(t, "refresher").Write(t, dir, "tls")
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	p := proctest.Start(t, "refresher", nil, proctest.Tokengate(t), "refresher", "--dev", "--listen", addr,
		"--store", "memory://", "--admin-token", "0123456789abcdef0123", "--issuer", "https://auth.test", "--audience", "api",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)
	p.WaitTCP(t, addr, 20*time.Second)
	waitFor(t, func() bool { return healthcheck("https://"+addr+"/readyz", "--tls-ca-file", caFile) == nil })
	if err := healthcheck("https://"+addr+"/.well-known/jwks.json", "--tls-ca-file", caFile); err != nil {
		t.Fatalf("JWKS over TLS: %v", err)
	}
	if err := healthcheck("https://" + addr + "/readyz"); err == nil {
		t.Error("healthy although the service's CA is not trusted")
	}
}

// Missing or unreadable TLS files are usage errors naming their flags.
func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"extauthz", "--jwks-file", "x", "--issuer", "https://i", "--audience", "a", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem"},
			[]string{"tls-cert-file: required"}},
		{[]string{"extauthz", "--jwks-file", "x", "--issuer", "https://i", "--audience", "a", "--tls-cert-file", filepath.Join(dir, "none.crt"), "--tls-key-file", filepath.Join(dir, "none.key")},
			[]string{"tls-cert-file", "none.crt"}},
		{[]string{"refresher", "--store", "memory://", "--dev", "--admin-token", "0123456789abcdef0123", "--tls-cert-file", "c.pem"},
			[]string{"tls-key-file: required"}},
	} {
		err := run(context.Background(), c.args, func(string) string { return "" }, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want a usage error", c.args, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error lacks %q: %v", c.args, w, err)
			}
		}
	}
}
