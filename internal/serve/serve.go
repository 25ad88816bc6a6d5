// Package serve runs HTTP and gRPC servers until a context ends and then
// stops them gracefully: no new connections are accepted and requests in
// flight finish (within Grace), so a rolling update drops nothing. Both
// services use it.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// Grace bounds how long a shutdown waits for requests in flight. Kubernetes
// sends SIGKILL 30 s after SIGTERM by default; stopping a little earlier lets
// us exit cleanly on our own terms.
const Grace = 25 * time.Second

// HTTP serves srv on ln until ctx ends, then shuts it down gracefully. It
// returns nil after a clean shutdown and the serve error otherwise.
func HTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// GRPC serves s on ln until ctx ends, then stops it gracefully: the listener
// closes at once and RPCs in flight finish, up to Grace, after which the
// remaining ones are cancelled.
func GRPC(ctx context.Context, s *grpc.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(Grace):
		s.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
	}
	return nil
}
