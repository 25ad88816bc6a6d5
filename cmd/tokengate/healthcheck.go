package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/probe"
)

// runHealthcheck probes a running service once and exits 0 when it is healthy,
// 1 when it is not. It exists for runtimes that cannot probe HTTP or gRPC
// themselves (Docker HEALTHCHECK, Nomad, ECS): the distroless image has no
// shell or curl, so the binary probes itself.
//
// The target is an http(s) URL (healthy = 2xx, e.g. http://127.0.0.1:9002/readyz)
// or grpc://HOST:PORT (grpc.health.v1.Health/Check answers SERVING).
func runHealthcheck(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	target := fs.String("url", "", "what to probe: an http(s) URL (healthy on 2xx) or grpc://HOST:PORT (grpc.health.v1 SERVING); may also be given as the only argument")
	timeout := fs.Duration("timeout", 3*time.Second, "give up and report unhealthy after this long")
	service := fs.String("grpc-service", "", "service name sent in the gRPC health check (empty = the whole server)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tokengate healthcheck [flags] URL\n\nexamples:\n  tokengate healthcheck http://127.0.0.1:8080/readyz\n  tokengate healthcheck grpc://127.0.0.1:9001")
		envflag.Usage(fs, "TOKENGATE_HEALTHCHECK_")()
	}
	// Own env prefix: the probe runs inside the service's container, whose
	// TOKENGATE_* variables configure the service, not the probe.
	if err := envflag.Parse(fs, e.args, "TOKENGATE_HEALTHCHECK_", e.getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case fs.NArg() == 1 && *target == "":
		*target = fs.Arg(0)
	case fs.NArg() > 1 || (fs.NArg() == 1 && *target != ""):
		return fmt.Errorf("%w: healthcheck takes one target, got %q", errUsage, append([]string{*target}, fs.Args()...))
	case *target == "":
		return fmt.Errorf("%w: healthcheck needs a target, e.g. http://127.0.0.1:9002/readyz or grpc://127.0.0.1:9001", errUsage)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: target %q is not a URL with a host", errUsage, *target)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch u.Scheme {
	case "http", "https":
		err = probe.HTTP(ctx, u.String())
	case "grpc":
		err = probe.GRPC(ctx, u.Host, *service)
	default:
		return fmt.Errorf("%w: target scheme %q: use http, https or grpc", errUsage, u.Scheme)
	}
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	_, err = fmt.Fprintf(e.stdout, "healthy: %s\n", *target)
	return err
}
