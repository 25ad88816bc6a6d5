// Package tlsfiles serves TLS from certificate files that are replaced in
// place while the process runs (cert-manager rotates a mounted Secret):
// the files are checked for a change on a handshake at most once per
// second and re-read when they changed, so a rotation needs no restart.
// A replacement that does not load keeps the running certificate and is
// logged. It also builds the client side that `tokengate healthcheck`
// uses.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CheckInterval is the shortest time between two looks at the files: a
// handshake costs at most a few stat calls once per interval.
const CheckInterval = time.Second

// Files names the PEM files of a TLS listener.
type Files struct {
	// CertFile and KeyFile are the server certificate (chain, leaf first)
	// and its private key.
	CertFile, KeyFile string
	// ClientCAFile, when set, turns on mutual TLS: every client must
	// present a certificate signed by one of these CAs.
	ClientCAFile string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.ClientCAFile != "" }

// Problems lists every misconfiguration, each named by prefix plus the
// flag suffix (cert-file, key-file, client-ca-file).
func (f Files) Problems(prefix string) []error {
	var errs []error
	if !f.Enabled() {
		return nil
	}
	if f.CertFile == "" {
		errs = append(errs, fmt.Errorf("%scert-file: required with --%skey-file or --%sclient-ca-file", prefix, prefix, prefix))
	}
	if f.KeyFile == "" {
		errs = append(errs, fmt.Errorf("%skey-file: required with --%scert-file", prefix, prefix))
	}
	return errs
}

// Reloader holds the current certificate and client CA pool of one set of
// Files. It is safe for concurrent use.
type Reloader struct {
	files Files
	log   *slog.Logger
	now   func() time.Time

	cur atomic.Pointer[state]

	mu        sync.Mutex // serialises checks and reloads
	lastCheck time.Time
	stamp     [3]fileStamp
}

type state struct {
	cert    *tls.Certificate
	clients *x509.CertPool // nil: no client certificate asked for
}

type fileStamp struct {
	size    int64
	modTime time.Time
}

// Options tune a Reloader; the zero value is production.
type Options struct {
	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil is time.Now; tests pass a fake clock
}

// New loads files once; an error names the file that failed.
func New(files Files, opts Options) (*Reloader, error) {
	if errs := files.Problems("tls-"); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r := &Reloader{files: files, log: opts.Logger, now: opts.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	st, stamp, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(st)
	r.stamp = stamp
	r.lastCheck = r.now()
	return r, nil
}

func (r *Reloader) paths() [3]string {
	return [3]string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile}
}

func stamps(paths [3]string) [3]fileStamp {
	var s [3]fileStamp
	for i, p := range paths {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			s[i] = fileStamp{size: fi.Size(), modTime: fi.ModTime()}
		}
	}
	return s
}

// load reads every file. The stamps are taken before the read, so a file
// replaced during the read is read again at the next check.
func (r *Reloader) load() (*state, [3]fileStamp, error) {
	stamp := stamps(r.paths())
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return nil, stamp, fmt.Errorf("tls-cert-file %s / tls-key-file %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	st := &state{cert: &cert}
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return nil, stamp, fmt.Errorf("tls-client-ca-file: %w", err)
		}
		st.clients = x509.NewCertPool()
		if !st.clients.AppendCertsFromPEM(pem) {
			return nil, stamp, fmt.Errorf("tls-client-ca-file %s: no PEM certificate in it", r.files.ClientCAFile)
		}
	}
	return st, stamp, nil
}

// Reload re-reads the files now, whether they changed or not. On error
// the running certificate and CA pool are kept.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Reloader) reloadLocked() error {
	st, stamp, err := r.load()
	r.stamp = stamp // a bad file is not retried until it changes again
	if err != nil {
		r.log.Warn("tls certificate reload failed; keeping the running certificate", "error", err.Error())
		return err
	}
	r.cur.Store(st)
	r.log.Info("tls certificate reloaded", "cert_file", r.files.CertFile, "not_after", st.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// maybeReload looks at the files when CheckInterval has passed since the
// last look, and reloads them when one changed.
func (r *Reloader) maybeReload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.lastCheck) < CheckInterval && !now.Before(r.lastCheck) {
		return
	}
	r.lastCheck = now
	if stamps(r.paths()) == r.stamp {
		return
	}
	_ = r.reloadLocked()
}

// Certificate is the certificate served now.
func (r *Reloader) Certificate() *tls.Certificate { return r.cur.Load().cert }

// ServerConfig is a tls.Config for a listener: TLS 1.2 or later, the
// current certificate on every handshake and, with a ClientCAFile, a
// verified client certificate required. nextProtos are the ALPN
// protocols the listener speaks (h2 for gRPC; h2 and http/1.1 for HTTP).
func (r *Reloader) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.maybeReload()
			st := r.cur.Load()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{*st.cert},
			}
			if st.clients != nil {
				c.ClientCAs = st.clients
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// ClientFiles name the PEM files of a TLS client (a probe).
type ClientFiles struct {
	// CAFile verifies the server; empty uses the system roots.
	CAFile string
	// CertFile and KeyFile, both or neither, are presented to a server
	// that asks for a client certificate (mutual TLS).
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must hold; empty is
	// the host dialled.
	ServerName string
}

// ClientConfig builds the client tls.Config of f.
func ClientConfig(f ClientFiles) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-ca-file %s: no PEM certificate in it", f.CAFile)
		}
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("tls-cert-file and tls-key-file: give both or neither")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls-cert-file %s / tls-key-file %s: %w", f.CertFile, f.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
