// Command noopauthz is the baseline of the extauthz load harness
// (test/load/run.sh): an envoy.service.auth.v3.Authorization server that
// answers every Check with OK and does nothing else, plus an HTTP server that
// answers every request 200 (the baseline for forward-auth under wrk).
//
// It is the floor a real ext_authz server is measured against: whatever gRPC,
// HTTP/2, protobuf decoding and the loopback network cost is in both numbers,
// so the ratio tokengate/noop isolates what tokengate's decision costs. For the
// comparison to be fair it serves with the same gRPC server options as
// `tokengate extauthz` (serve.DefaultGRPCTransport).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokengate/tokengate/internal/serve"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "noopauthz:", err)
		os.Exit(1)
	}
}

// Addresses is the one JSON line run prints once both listeners are bound, so
// a caller that asked for port 0 learns the real ports.
type Addresses struct {
	GRPC string `json:"grpc"`
	HTTP string `json:"http,omitempty"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("noopauthz", flag.ContinueOnError)
	grpcListen := fs.String("grpc-listen", "127.0.0.1:0", "address of the gRPC Authorization server")
	httpListen := fs.String("http-listen", "", "address of the HTTP server that answers every request 200 (empty: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	grpcLn, err := net.Listen("tcp", *grpcListen)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	// The same transport options as `tokengate extauthz` (one definition in
	// internal/serve), so the comparison is fair by construction.
	srv := grpc.NewServer(serve.DefaultGRPCTransport.ServerOptions()...)
	authv3.RegisterAuthorizationServer(srv, noop{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	addrs := Addresses{GRPC: grpcLn.Addr().String()}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(grpcLn) }()

	var httpSrv *http.Server
	if *httpListen != "" {
		httpLn, err := net.Listen("tcp", *httpListen)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("listen http: %w", err)
		}
		// The same http.Server settings (timeouts, header bound, keep-alive)
		// and connection bound as `tokengate extauthz`'s HTTP listener.
		lim := serve.DefaultHTTPLimits
		httpSrv = lim.Server(http.HandlerFunc(allowHTTP))
		httpLn = lim.Listener(httpLn)
		addrs.HTTP = httpLn.Addr().String()
		go func() {
			if err := httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}

	line, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}

	select {
	case err := <-errc:
		srv.Stop()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if httpSrv != nil {
		_ = httpSrv.Shutdown(shutdownCtx)
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		srv.Stop()
	}
	return nil
}

// noop allows everything: the cheapest possible Authorization server.
type noop struct{}

var _ authv3.AuthorizationServer = noop{}

func (noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

func allowHTTP(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}
