package main

import (
	"context"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extauthz"
)

type eaBlockingDenylist struct {
	entered chan struct{}
	release chan struct{}
}

func (b *eaBlockingDenylist) Revoked(string) bool {
	b.entered <- struct{}{}
	<-b.release
	return false
}

func (b *eaBlockingDenylist) Ready() bool { return true }

// waitRefused waits until addr refuses connections: the listener is
// closed. Polling a condition, with a bound.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Graceful shutdown: a check in flight when the context ends still gets
// its answer, and extauthz.Run returns cleanly after it. The check is
// released only once the shutdown can be seen from outside — health Watch
// NOT_SERVING, then the Watch stream ended, then the gRPC listener
// refusing connections — so a server that cut connections (Stop for
// GracefulStop) has already failed the check by then. The open Watch
// stream must not hold the shutdown either.
func TestServeExtauthzFinishesInFlightCheck(t *testing.T) {
	t.Parallel()
	f := newEAFixture(t)
	cfg := extauthz.Config{Providers: []extauthz.Provider{{Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: f.jwksPath}}}
	dl := &eaBlockingDenylist{entered: make(chan struct{}, 1), release: make(chan struct{})}
	addrs := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- extauthz.Run(ctx, cfg, extauthz.RunConfig{
			GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
			OnListening: func(g, _ net.Addr) { addrs <- g },
		}, extauthz.Options{Denylist: dl})
	}()
	var grpcAddr net.Addr
	select {
	case grpcAddr = <-addrs:
	case err := <-served:
		t.Fatalf("extauthz.Run: %v", err)
	}
	conn, err := grpc.NewClient(grpcAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch before shutdown: %v %v", r, err)
	}
	answered := make(chan *authv3.CheckResponse, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"authorization": "Bearer " + f.token(t, "api")}},
		}}})
		if err != nil {
			t.Errorf("in-flight check: %v", err)
		}
		answered <- resp
	}()
	<-dl.entered
	cancel() // SIGTERM
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after SIGTERM: %v %v", r, err)
	}
	if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Watch at shutdown: %v, want it ended (Unavailable)", err)
	}
	waitRefused(t, grpcAddr.String())
	close(dl.release)
	if resp := <-answered; resp.GetOkResponse() == nil {
		t.Fatalf("in-flight check answer %v", resp)
	}
	if err := <-served; err != nil {
		t.Fatalf("extauthz.Run: %v", err)
	}
}
