// Command noopauthz is the baseline of the extauthz load harness
// (test/load/run.sh): an envoy.service.auth.v3.Authorization server that
// answers every Check with OK and does nothing else, plus an HTTP server that
// answers every request 200 (the baseline for forward-auth under wrk), with
// the response headers of a file when --http-headers-file names one: the
// harness gives it tokengate's own answer, so that both servers write the
// same headers and the ratio isolates the decision (a forward-auth server
// must send its identity headers; net/http's work for them is the same).
//
// It is the floor a real ext_authz server is measured against: whatever gRPC,
// HTTP/2, protobuf decoding and the loopback network cost is in both numbers,
// so the ratio tokengate/noop isolates what tokengate's decision costs. For the
// comparison to be fair it serves with the same gRPC server options as
// `tokengate extauthz` (serve.DefaultGRPCTransport).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
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
	headersFile := fs.String("http-headers-file", "", "answer every HTTP request with the response headers in this file (a `curl -D` dump: a status line, then one header a line); empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var answer http.Header
	if *headersFile != "" {
		var err error
		if answer, err = readHeaders(*headersFile); err != nil {
			return err
		}
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
		httpSrv = lim.Server(allowHTTP(answer))
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

// allowHTTP answers every request 200 with the headers of answer. The
// values are made once and assigned, names as they are (not
// canonicalised), as tokengate assigns its ready-made answer.
func allowHTTP(answer http.Header) http.Handler {
	if len(answer) == 0 {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for k, v := range answer {
			h[k] = v
		}
		w.WriteHeader(http.StatusOK)
	})
}

// readHeaders reads the headers of a `curl -D` dump, names as written,
// leaving out those net/http writes itself (Date, Content-Length,
// Connection, Keep-Alive, Transfer-Encoding).
func readHeaders(path string) (http.Header, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--http-headers-file: %w", err)
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := r.ReadLine(); err != nil { // the status line
		return nil, fmt.Errorf("--http-headers-file %s: no status line: %w", path, err)
	}
	h := http.Header{}
	for {
		line, err := r.ReadLine()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("--http-headers-file %s: %w", path, err)
		}
		if line == "" {
			break
		}
		name, value, ok := bytes.Cut([]byte(line), []byte(":"))
		if !ok || len(bytes.TrimSpace(name)) == 0 {
			return nil, fmt.Errorf("--http-headers-file %s: line %q is not a header", path, line)
		}
		k := string(bytes.TrimSpace(name))
		switch http.CanonicalHeaderKey(k) {
		case "Date", "Content-Length", "Connection", "Keep-Alive", "Transfer-Encoding":
			continue
		}
		v := string(bytes.TrimSpace(value))
		h[k] = append(h[k][:len(h[k]):len(h[k])], v)
	}
	return h, nil
}
