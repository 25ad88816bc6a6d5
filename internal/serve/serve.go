// Package serve runs a service's HTTP and gRPC servers until a context ends
// and then stops them in the order a load balancer needs: readiness turns
// NOT_SERVING first (OnDrain), the servers keep answering for a drain period
// so every balancer notices, then long-lived streams are ended (OnStop), the
// listeners close and requests in flight finish (within Grace). Both
// services use it; it is the only serve/shutdown code in the repository.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
)

// DefaultGrace bounds how long a shutdown waits for requests in flight once
// the listeners are closed. Kubernetes sends SIGKILL
// terminationGracePeriodSeconds (30 s by default) after SIGTERM; the drain
// period plus Grace must stay below it.
const DefaultGrace = 20 * time.Second

// Options say how a Group stops.
type Options struct {
	// DrainPeriod is how long the servers keep serving, with readiness
	// already NOT_SERVING, after the context ends. 0 stops at once.
	DrainPeriod time.Duration
	// Grace bounds the wait for requests in flight after the listeners
	// close; then the remaining ones are cut. 0 is DefaultGrace.
	Grace time.Duration
	// OnDrain is called once when the context ends, before the drain
	// period: turn readiness off here.
	OnDrain func()
	// OnStop is called once after the drain period, just before the
	// listeners close: end long polls and watch streams here, so they do
	// not hold the shutdown for the whole Grace.
	OnStop func()
	// Logger reports the phases; nil discards.
	Logger *slog.Logger
}

// Group is the servers of one service, started and stopped together.
type Group struct {
	opts     Options
	servers  []server
	draining atomic.Bool
}

type server struct {
	name     string
	serve    func() error
	shutdown func(context.Context) error // graceful: returns when in-flight work is done or ctx ends
	kill     func()                      // cuts what is left
	closed   func(error) bool            // the error Serve returns after a stop
}

// New makes an empty group.
func New(opts Options) *Group {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Group{opts: opts}
}

// LimitListener bounds the connections ln has open at once to n: beyond
// it, new connections wait in the kernel's accept queue until one closes.
// n <= 0 means no bound.
func LimitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, n)
}

// TLSListener is ln serving TLS with cfg, or ln itself when cfg is nil
// (plaintext). Put it over the connection limit, so a connection that
// never finishes its handshake still counts (and is cut by the server's
// read timeouts).
func TLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	if cfg == nil {
		return ln
	}
	return tls.NewListener(ln, cfg)
}

// HTTP adds an HTTP server on ln. During the drain period its answers
// carry Connection: close, so keep-alive clients reconnect (to another
// replica) after each request instead of holding a connection that the
// final Shutdown would close under a request being sent.
func (g *Group) HTTP(srv *http.Server, ln net.Listener) {
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	g.servers = append(g.servers, server{
		name:     "http " + ln.Addr().String(),
		serve:    func() error { return srv.Serve(ln) },
		shutdown: srv.Shutdown,
		kill:     func() { _ = srv.Close() },
		closed:   func(err error) bool { return errors.Is(err, http.ErrServerClosed) },
	})
}

// GRPC adds a gRPC server on ln.
func (g *Group) GRPC(s *grpc.Server, ln net.Listener) {
	g.servers = append(g.servers, server{
		name:  "grpc " + ln.Addr().String(),
		serve: func() error { return s.Serve(ln) },
		shutdown: func(ctx context.Context) error {
			stopped := make(chan struct{})
			go func() {
				s.GracefulStop()
				close(stopped)
			}()
			select {
			case <-stopped:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		kill:   s.Stop,
		closed: func(err error) bool { return err == nil || errors.Is(err, grpc.ErrServerStopped) },
	})
}

// Run serves until ctx ends or a server fails, then stops every server:
// OnDrain, the drain period, OnStop, close the listeners and finish in
// flight. It returns nil after a clean stop started by ctx.
func (g *Group) Run(ctx context.Context) error {
	errc := make(chan error, len(g.servers))
	var wg sync.WaitGroup
	for _, s := range g.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.serve()
			if s.closed(err) {
				err = nil
			} else {
				err = fmt.Errorf("serve %s: %w", s.name, err)
			}
			errc <- err
		}()
	}
	var failed error
	select {
	case failed = <-errc:
		// A server stopped on its own (or failed): stop the others now.
		if failed == nil {
			failed = errors.New("a server stopped unexpectedly")
		}
	case <-ctx.Done():
		g.drain(errc, &failed)
	}
	if g.opts.OnStop != nil {
		g.opts.OnStop()
	}
	g.opts.Logger.Info("shutdown: listeners closing, finishing requests in flight", "grace", g.opts.Grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), g.opts.Grace)
	defer cancel()
	var stopWG sync.WaitGroup
	stopErrs := make([]error, len(g.servers))
	for i, s := range g.servers {
		stopWG.Add(1)
		go func() {
			defer stopWG.Done()
			if err := s.shutdown(sctx); err != nil {
				s.kill()
				stopErrs[i] = fmt.Errorf("shut down %s: %w", s.name, err)
			}
		}()
	}
	stopWG.Wait()
	wg.Wait()
	close(errc)
	errs := append([]error{failed}, stopErrs...)
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// drain runs OnDrain and keeps serving for the drain period (cut short if
// a server fails meanwhile).
func (g *Group) drain(errc <-chan error, failed *error) {
	g.draining.Store(true)
	if g.opts.OnDrain != nil {
		g.opts.OnDrain()
	}
	if g.opts.DrainPeriod <= 0 {
		return
	}
	g.opts.Logger.Info("shutdown: readiness NOT_SERVING, still serving for the drain period", "drain_period", g.opts.DrainPeriod.String())
	t := time.NewTimer(g.opts.DrainPeriod)
	defer t.Stop()
	select {
	case <-t.C:
	case err := <-errc:
		*failed = err
		if err == nil {
			*failed = errors.New("a server stopped unexpectedly")
		}
	}
}
