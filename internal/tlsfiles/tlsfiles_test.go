package tlsfiles_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/internal/fakeclock"
	"github.com/tokengate/tokengate/internal/tlsfiles"
	"github.com/tokengate/tokengate/internal/tlsfiles/tlstest"
)

// echo serves cfg on loopback: every connection echoes what it reads.
func echo(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tln := tls.NewListener(ln, cfg)
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line over c and expects it back: the connection works
// end to end (under TLS 1.3 a refused client certificate shows here).
func roundTrip(c *tls.Conn) error {
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, []byte("ping\n")) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

type fixture struct {
	ca      *tlstest.CA
	clock   *fakeclock.Clock
	r       *tlsfiles.Reloader
	files   tlsfiles.Files
	addr    string
	servers tlstest.Pair
}

func newFixture(t *testing.T, mtls bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{ca: tlstest.NewCA(t, "test ca"), clock: fakeclock.New()}
	f.servers = f.ca.Issue(t, "server one")
	f.files.CertFile, f.files.KeyFile = f.servers.Write(t, dir, "tls")
	if mtls {
		f.files.ClientCAFile = filepath.Join(dir, "ca.crt")
		tlstest.WriteFile(t, f.files.ClientCAFile, f.ca.PEM)
	}
	r, err := tlsfiles.New(f.files, tlsfiles.Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	f.addr = echo(t, r.ServerConfig())
	return f
}

func (f *fixture) dial(t *testing.T, clientCerts ...tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: tlstest.Pool(f.ca), Certificates: clientCerts, ServerName: "localhost"})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func servedSerial(t *testing.T, c *tls.Conn) string {
	t.Helper()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestRotationWhileConnected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	old, err := f.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(t, old), f.servers.Serial.String(); got != want {
		t.Fatalf("served serial %s, want %s", got, want)
	}

	next := f.ca.Issue(t, "server two")
	tlstest.WriteFile(t, f.files.CertFile, next.CertPEM)
	tlstest.WriteFile(t, f.files.KeyFile, next.KeyPEM)

	// Within CheckInterval the files are not looked at.
	c, err := f.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, c); got != f.servers.Serial.String() {
		t.Fatalf("reloaded before CheckInterval passed: serial %s", got)
	}

	f.clock.Advance(tlsfiles.CheckInterval)
	c, err = f.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(t, c), next.Serial.String(); got != want {
		t.Fatalf("after rotation served serial %s, want %s", got, want)
	}
	if err := roundTrip(c); err != nil {
		t.Fatalf("new connection: %v", err)
	}
	// The connection opened before the rotation keeps working.
	if err := roundTrip(old); err != nil {
		t.Fatalf("connection opened before the rotation: %v", err)
	}
}

func TestBadReplacementKeepsRunningCertificate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		cert, key  func(next tlstest.Pair) []byte
		wantErrSub string
	}{
		{"garbage cert", func(tlstest.Pair) []byte { return []byte("not a pem") }, func(n tlstest.Pair) []byte { return n.KeyPEM }, "tls-cert-file"},
		{"empty key", func(n tlstest.Pair) []byte { return n.CertPEM }, func(tlstest.Pair) []byte { return nil }, "tls-key-file"},
		{"key of another cert", func(n tlstest.Pair) []byte { return n.CertPEM }, nil, "private key does not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, false)
			next := f.ca.Issue(t, "server two")
			tlstest.WriteFile(t, f.files.CertFile, c.cert(next))
			key := f.ca.Issue(t, "other").KeyPEM
			if c.key != nil {
				key = c.key(next)
			}
			tlstest.WriteFile(t, f.files.KeyFile, key)
			f.clock.Advance(tlsfiles.CheckInterval)
			conn, err := f.dial(t)
			if err != nil {
				t.Fatalf("handshake after a bad replacement: %v", err)
			}
			if got := servedSerial(t, conn); got != f.servers.Serial.String() {
				t.Fatalf("served serial %s, want the running %s", got, f.servers.Serial)
			}
			if err := f.r.Reload(); err == nil || !strings.Contains(err.Error(), c.wantErrSub) {
				t.Fatalf("Reload() = %v, want an error naming %q", err, c.wantErrSub)
			}
			// A good file afterwards is taken.
			tlstest.WriteFile(t, f.files.CertFile, next.CertPEM)
			tlstest.WriteFile(t, f.files.KeyFile, next.KeyPEM)
			if err := f.r.Reload(); err != nil {
				t.Fatal(err)
			}
			if got := f.r.Certificate().Leaf.SerialNumber.String(); got != next.Serial.String() {
				t.Fatalf("after a good file serial %s, want %s", got, next.Serial)
			}
		})
	}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	other := tlstest.NewCA(t, "other ca")
	for _, c := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"no client certificate", nil, false},
		{"certificate of another CA", []tls.Certificate{other.Issue(t, "intruder").TLS(t)}, false},
		{"certificate of the client CA", []tls.Certificate{f.ca.Issue(t, "envoy").TLS(t)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			conn, err := f.dial(t, c.certs...)
			if err == nil {
				err = roundTrip(conn) // TLS 1.3: the server's refusal arrives after the client's handshake
			}
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && err == nil {
				t.Fatal("accepted a client without a valid certificate")
			}
		})
	}
}

func TestClientCARotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	newCA := tlstest.NewCA(t, "new client ca")
	client := newCA.Issue(t, "envoy").TLS(t)
	if c, err := f.dial(t, client); err == nil && roundTrip(c) == nil {
		t.Fatal("client of a CA not yet trusted was accepted")
	}
	tlstest.WriteFile(t, f.files.ClientCAFile, append(append([]byte{}, f.ca.PEM...), newCA.PEM...))
	if err := f.r.Reload(); err != nil {
		t.Fatal(err)
	}
	c, err := f.dial(t, client)
	if err == nil {
		err = roundTrip(c)
	}
	if err != nil {
		t.Fatalf("client of the added CA refused: %v", err)
	}
}

func TestMinimumTLS12(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	_, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: tlstest.Pool(f.ca), ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Fatal("TLS 1.1 handshake accepted")
	}
}

func TestNewNamesTheBadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	cert, key := ca.Issue(t, "s").Write(t, dir, "tls")
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		files tlsfiles.Files
		want  string
	}{
		{tlsfiles.Files{KeyFile: key}, "tls-cert-file: required"},
		{tlsfiles.Files{CertFile: cert}, "tls-key-file: required"},
		{tlsfiles.Files{ClientCAFile: bad}, "tls-cert-file: required"},
		{tlsfiles.Files{CertFile: bad, KeyFile: key}, "tls-cert-file"},
		{tlsfiles.Files{CertFile: cert, KeyFile: key, ClientCAFile: bad}, "tls-client-ca-file " + bad + ": no PEM certificate"},
		{tlsfiles.Files{CertFile: cert, KeyFile: key, ClientCAFile: filepath.Join(dir, "missing")}, "tls-client-ca-file"},
	} {
		if _, err := tlsfiles.New(c.files, tlsfiles.Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.files, err, c.want)
		}
	}
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	caFile := filepath.Join(dir, "ca.crt")
	tlstest.WriteFile(t, caFile, ca.PEM)
	cert, key := ca.Issue(t, "probe").Write(t, dir, "probe")
	cfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CAFile: caFile, CertFile: cert, KeyFile: key, ServerName: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 1 || cfg.ServerName != "svc" || cfg.RootCAs == nil {
		t.Fatalf("client config %+v", cfg)
	}
	if _, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CertFile: cert}); err == nil {
		t.Fatal("a cert without a key was accepted")
	}
}
