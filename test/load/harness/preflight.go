package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

func runPreflight(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("preflight", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of the Authorization server (required)")
	data := fs.String("data", "", "the CheckRequest JSON that ghz will send (required)")
	identity := fs.Bool("identity", false, "also require the identity headers of the load token (x-user-id, x-user-name, x-user-roles)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *data == "" {
		return fmt.Errorf("preflight: --addr and --data are required")
	}
	raw, err := os.ReadFile(*data)
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		return fmt.Errorf("preflight: %s is not a CheckRequest: %w", *data, err)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &req)
	if err != nil {
		return fmt.Errorf("preflight %s: Check: %w", *addr, err)
	}
	if err := expectAllow(resp, *identity); err != nil {
		return fmt.Errorf("preflight %s: %w", *addr, err)
	}
	_, err = fmt.Fprintf(stdout, "preflight %s: allowed%s\n", *addr, map[bool]string{true: " with the load identity", false: ""}[*identity])
	return err
}

// expectAllow checks that resp is an allow and, when identity is set, that it
// carries the load token's identity: only then does the harness measure the
// verified (and, after the first request, cached) path rather than a cheap
// denial.
func expectAllow(resp *authv3.CheckResponse, identity bool) error {
	if code := codes.Code(resp.GetStatus().GetCode()); code != codes.OK {
		return fmt.Errorf("answer is %v, not OK (denied: %v)", code, resp.GetDeniedResponse().GetBody())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		return fmt.Errorf("answer has no ok_response")
	}
	if !identity {
		return nil
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := [][2]string{{"x-user-id", loadSubject}, {"x-user-name", loadName}, {"x-user-roles", "reader,writer"}}
	for _, kv := range want {
		if k, v := kv[0], kv[1]; got[k] != v {
			return fmt.Errorf("allowed, but header %s = %q, want %q (headers %v)", k, got[k], v, got)
		}
	}
	return nil
}
