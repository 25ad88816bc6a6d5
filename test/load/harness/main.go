// Command harness holds the Go parts of the extauthz load harness
// (test/load/run.sh), which stays a short shell script that starts processes
// and runs the load generators:
//
//   - prep: make a signing key, its JWKS, a real access token, the ghz request
//     (a CheckRequest as JSON) and a protoset of the ext_authz API;
//   - tokens: write ghz data files of CheckRequests that each carry a distinct,
//     freshly signed token (the uncached path: no token is sent twice);
//   - rss: send a server many distinct tokens and print its resident set
//     size as it goes (the cache's memory bound under a stream of new tokens);
//   - ports: print free loopback ports;
//   - preflight: send that CheckRequest once and insist on the expected answer,
//     so a harness that would measure denials (or errors) stops before it
//     reports anything;
//   - report: turn the ghz/wrk results and the servers' CPU counters of every
//     round into the Markdown tables of docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: harness prep|tokens|rss|ports|preflight|report [flags]")
	}
	switch args[0] {
	case "prep":
		return runPrep(args[1:], stdout)
	case "tokens":
		return runTokens(args[1:], stdout)
	case "rss":
		return runRSS(ctx, args[1:], stdout)
	case "ports":
		return runPorts(args[1:], stdout)
	case "preflight":
		return runPreflight(ctx, args[1:], stdout)
	case "report":
		return runReport(args[1:], stdout)
	}
	return fmt.Errorf("unknown subcommand %q (want prep, tokens, rss, ports, preflight or report)", args[0])
}
