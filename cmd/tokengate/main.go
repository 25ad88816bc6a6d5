// Command tokengate runs the tokengate services: the Envoy ext_authz decision
// service, the token refresher, and a one-process dev mode.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokengate/tokengate/internal/envflag"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// env is what a subcommand gets from the process: arguments after the
// subcommand name, environment lookup and output streams. Tests pass their own.
type env struct {
	args   []string
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, e env) error
}

// commands is the subcommand table; each subcommand lives in its own file.
var commands = map[string]command{
	"extauthz":        {"run the Envoy ext_authz decision service (gRPC + HTTP forward-auth)", runExtauthz},
	"refresher":       {"run the token refresher (sessions, rotation, JWKS, revocation feed)", runRefresher},
	"dev":             {"run refresher and extauthz in one process on embedded defaults", runDev},
	"validate-config": {"check an extauthz config file and list every problem", runValidateConfig},
	"healthcheck":     {"probe a running service's /readyz (for runtimes without HTTP probes)", runHealthcheck},
	"keygen":          {"generate a signing key (to a file, stdout, or a Kubernetes Secret)", runKeygen},
	"version":         {"print the version", runVersion},
}

// errUsage marks errors that are the caller's fault; main exits 2 for them.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first SIGTERM or Ctrl-C starts a graceful shutdown (drain period
	// included); a second one exits at once with the default action.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "tokengate:", err)
	if errors.Is(err, errUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return fmt.Errorf("%w: a subcommand is required", errUsage)
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
	return cmd.run(ctx, env{args: args[1:], getenv: getenv, stdout: stdout, stderr: stderr})
}

func usage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: tokengate <subcommand> [flags]\n\nsubcommands:\n")
	for _, name := range names {
		fmt.Fprintf(&b, "  %-16s %s\n", name, commands[name].summary)
	}
	b.WriteString("\nRun 'tokengate <subcommand> -h' for its flags. Every flag can also be set\nwith an environment variable TOKENGATE_<FLAG>, '-' written as '_'.\n")
	_, _ = io.WriteString(w, b.String())
}

// parseFlags reads a subcommand's flags from its arguments and from
// TOKENGATE_<FLAG> env vars, and refuses positional arguments. done is true
// when -h printed the usage: the subcommand then returns nil.
func parseFlags(fs *flag.FlagSet, e env) (done bool, err error) {
	if err := envflag.Parse(fs, e.args, "TOKENGATE_", e.getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%w: %s takes no arguments, got %q", errUsage, fs.Name(), fs.Args())
	}
	return false, nil
}

// newLogger makes the JSON logger on w at --log-level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runVersion(_ context.Context, e env) error {
	_, err := fmt.Fprintf(e.stdout, "tokengate %s\n", version)
	return err
}

// newRegistry is a service's metrics registry with the Go runtime and
// process collectors; a registration failure is an error, never a panic.
func newRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := errors.Join(
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return reg, nil
}
