// Package probe checks once whether a running service is healthy, over
// HTTP or the gRPC health protocol: what `tokengate healthcheck` runs in
// images without a shell or curl.
package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HTTP is healthy when target answers a GET with a 2xx. tlsCfg is the
// client side of an https target (CA, client certificate); nil uses the
// system roots.
func HTTP(ctx context.Context, target string, tlsCfg *tls.Config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	// A fresh client: no proxy from the environment, no redirects followed,
	// since a probe must see the service itself.
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, TLSClientConfig: tlsCfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s: %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// GRPC is healthy when grpc.health.v1.Health/Check on addr answers
// SERVING for service ("" is the whole server). With tlsCfg the
// connection is TLS; nil is plaintext.
func GRPC(ctx context.Context, addr, service string, tlsCfg *tls.Config) error {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(false))
	if err != nil {
		return fmt.Errorf("grpc health check %s: %w", addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health %s: %s", addr, resp.GetStatus())
	}
	return nil
}
