package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// start runs the server on free loopback ports and returns its addresses; the
// server is stopped (and must return nil) when the test ends.
func start(t *testing.T, args ...string) Addresses {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v after cancel, want nil", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read address line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	var addrs Addresses
	if err := json.Unmarshal(line, &addrs); err != nil {
		t.Fatalf("address line %q: %v", line, err)
	}
	return addrs
}

func TestNoopAllowsOverLoopbackGRPC(t *testing.T) {
	t.Parallel()
	addrs := start(t, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")

	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"empty request", &authv3.CheckRequest{}},
		{"no token", checkRequest(map[string]string{":path": "/api"})},
		{"garbage token", checkRequest(map[string]string{":path": "/api", "authorization": "Bearer not-a-jwt"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, tt.req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != codes.OK {
				t.Errorf("status = %v, want OK", got)
			}
			if resp.GetOkResponse() == nil {
				t.Errorf("response = %v, want an ok_response", resp)
			}
		})
	}

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	if hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, want SERVING", hc.GetStatus())
	}

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequestWithContext(ctx, method, "http://"+addrs.HTTP+"/authz/anything", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s status = %d, want 200", method, res.StatusCode)
		}
	}
}

func TestNoopWithoutHTTPListener(t *testing.T) {
	t.Parallel()
	addrs := start(t)
	if addrs.HTTP != "" {
		t.Errorf("http address = %q, want none when --http-listen is empty", addrs.HTTP)
	}
	if addrs.GRPC == "" {
		t.Error("no grpc address printed")
	}
}

func TestRunRefusesBadListenAddress(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"--grpc-listen", "127.0.0.1:notaport"}, io.Discard)
	if err == nil {
		t.Fatal("run accepted an unusable --grpc-listen")
	}
}

func checkRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4242}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "app.example", Path: headers[":path"], Headers: headers,
		}},
	}}
}

// With --http-headers-file the HTTP answer carries the dump's headers, as
// written, except those net/http writes itself.
func TestNoopAnswersWithHeadersFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "headers")
	dump := "HTTP/1.1 200 OK\r\nx-user-id: user-4711\r\nx-user-roles: admin,dev\r\nCache-Control: no-store\r\n" +
		"Date: Tue, 01 Dec 2026 14:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
	if err := os.WriteFile(file, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := start(t, "--http-listen", "127.0.0.1:0", "--http-headers-file", file)
	conn, err := net.Dial("tcp", addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /authz/x HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	for name, want := range map[string]string{"x-user-id": "user-4711", "x-user-roles": "admin,dev", "Cache-Control": "no-store"} {
		if got := res.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if len(res.Header["Date"]) != 1 {
		t.Errorf("Date = %q, want net/http's one", res.Header["Date"])
	}
}

func TestNoopRefusesBadHeadersFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "headers")
	if err := os.WriteFile(file, []byte("HTTP/1.1 200 OK\r\nnot a header\r\n\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"--http-headers-file", file}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--http-headers-file") {
		t.Errorf("run with a bad headers file = %v, want an error naming --http-headers-file", err)
	}
}
