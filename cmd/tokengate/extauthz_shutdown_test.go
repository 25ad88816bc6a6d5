package main

import (
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

// Graceful shutdown (issue 2 item 13): a check in flight when the context
// ends still gets its answer, and serveExtauthz returns cleanly after it.
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
		served <- serveExtauthz(ctx, cfg, extauthzRun{
			GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Denylist: dl,
			OnListening: func(g, _ net.Addr) { addrs <- g },
		})
	}()
	var grpcAddr net.Addr
	select {
	case grpcAddr = <-addrs:
	case err := <-served:
		t.Fatalf("serveExtauthz: %v", err)
	}
	conn, err := grpc.NewClient(grpcAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
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
	cancel() // SIGTERM: a server that did not wait would cancel the RPC and fail it
	close(dl.release)
	if resp := <-answered; resp.GetOkResponse() == nil {
		t.Fatalf("in-flight check answer %v", resp)
	}
	if err := <-served; err != nil {
		t.Fatalf("serveExtauthz: %v", err)
	}
}
