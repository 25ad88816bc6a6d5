package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/probe"
	"github.com/tokengate/tokengate/internal/tlsfiles"
)

// runHealthcheck probes a running service once and exits 0 when it is healthy,
// 1 when it is not. It exists for runtimes that cannot probe HTTP or gRPC
// themselves (Docker HEALTHCHECK, Nomad, ECS): the distroless image has no
// shell or curl, so the binary probes itself.
//
// The target is an http(s) URL (healthy = 2xx, e.g. http://127.0.0.1:9002/readyz)
// or grpc://HOST:PORT (grpc.health.v1.Health/Check answers SERVING; grpcs://
// over TLS). https and grpcs verify the server with --tls-ca-file and present
// --tls-cert-file to a service that requires mutual TLS.
func runHealthcheck(ctx context.Context, e env) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	target := fs.String("url", "", "what to probe: an http(s) URL (healthy on 2xx) or grpc://HOST:PORT, grpcs:// over TLS (grpc.health.v1 SERVING); may also be given as the only argument")
	timeout := fs.Duration("timeout", 3*time.Second, "give up and report unhealthy after this long")
	service := fs.String("grpc-service", "", "service name sent in the gRPC health check (empty = the whole server)")
	var tf tlsfiles.ClientFiles
	fs.StringVar(&tf.CAFile, "tls-ca-file", "", "https and grpcs: PEM CAs that verify the service's certificate (default: the system roots)")
	fs.StringVar(&tf.CertFile, "tls-cert-file", "", "https and grpcs: PEM client certificate, for a service that requires mutual TLS (with --tls-key-file)")
	fs.StringVar(&tf.KeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&tf.ServerName, "tls-server-name", "", "https and grpcs: the name the service's certificate must hold (default: the target's host)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tokengate healthcheck [flags] URL [flags]\n\nexamples:\n  tokengate healthcheck http://127.0.0.1:8080/readyz\n  tokengate healthcheck grpc://127.0.0.1:9001 --grpc-service envoy.service.auth.v3.Authorization\n  tokengate healthcheck https://127.0.0.1:9002/readyz --tls-ca-file ca.crt --tls-cert-file tls.crt --tls-key-file tls.key --tls-server-name tokengate-extauthz")
		envflag.Usage(fs, "TOKENGATE_HEALTHCHECK_")()
	}
	// Own env prefix: the probe runs inside the service's container, whose
	// TOKENGATE_* variables configure the service, not the probe. Flags may
	// come before or after the URL (Docker HEALTHCHECK lines are often
	// written URL first): Go's flag package stops at the first argument
	// that is not a flag, so what follows it is parsed again. After "--"
	// everything is an argument.
	head, tail, dashed := cutArgs(e.args)
	err := envflag.Parse(fs, head, "TOKENGATE_HEALTHCHECK_", e.getenv)
	var targets []string
	for err == nil && fs.NArg() > 0 {
		targets = append(targets, fs.Arg(0))
		err = fs.Parse(fs.Args()[1:])
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if dashed {
		targets = append(targets, tail...)
	}
	switch {
	case len(targets) == 1 && *target == "":
		*target = targets[0]
	case len(targets) > 1 || (len(targets) == 1 && *target != ""):
		return fmt.Errorf("%w: healthcheck takes one target, got %q", errUsage, append([]string{*target}, targets...))
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
	var tlsCfg *tls.Config
	switch u.Scheme {
	case "http", "grpc":
	case "https", "grpcs":
		if tlsCfg, err = tlsfiles.ClientConfig(tf); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
	default:
		return fmt.Errorf("%w: target scheme %q: use http, https, grpc or grpcs", errUsage, u.Scheme)
	}
	if tlsCfg == nil && (tf != tlsfiles.ClientFiles{}) {
		return fmt.Errorf("%w: --tls-* flags need an https:// or grpcs:// target, got %s://", errUsage, u.Scheme)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if u.Scheme == "http" || u.Scheme == "https" {
		err = probe.HTTP(ctx, u.String(), tlsCfg)
	} else {
		err = probe.GRPC(ctx, u.Host, *service, tlsCfg)
	}
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	_, err = fmt.Fprintf(e.stdout, "healthy: %s\n", *target)
	return err
}

// cutArgs splits args at the first "--": the part before it may hold
// flags, the part after only arguments.
func cutArgs(args []string) (head, tail []string, dashed bool) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:], true
		}
	}
	return args, nil, false
}
