package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestPrepWritesUsableFiles(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var out bytes.Buffer
			err := run(context.Background(), []string{"prep", "--dir", dir, "--alg", alg,
				"--issuer", "https://iss.test", "--audience", "api", "--ttl", "1h"}, &out)
			if err != nil {
				t.Fatal(err)
			}

			set, err := jwk.ReadFile(filepath.Join(dir, fileJWKS))
			if err != nil {
				t.Fatalf("jwks: %v", err)
			}
			if set.Len() != 1 {
				t.Fatalf("jwks has %d keys, want 1", set.Len())
			}
			key, _ := set.Key(0)
			if isPrivate(key) {
				t.Fatal("jwks.json holds a private key")
			}

			raw, err := os.ReadFile(filepath.Join(dir, fileToken))
			if err != nil {
				t.Fatal(err)
			}
			token := string(raw)
			tok, err := jwt.Parse(raw, jwt.WithKeySet(set), jwt.WithValidate(true),
				jwt.WithIssuer("https://iss.test"), jwt.WithAudience("api"))
			if err != nil {
				t.Fatalf("token does not verify against jwks.json: %v", err)
			}
			if sub, _ := tok.Subject(); sub != loadSubject {
				t.Errorf("sub = %q, want %q", sub, loadSubject)
			}
			if exp, _ := tok.Expiration(); time.Until(exp) < 50*time.Minute || time.Until(exp) > time.Hour {
				t.Errorf("exp = %v, want about 1h from now", exp)
			}
			msg, err := jws.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			hdr := msg.Signatures()[0].ProtectedHeaders()
			typ, _ := hdr.Type()
			kid, _ := hdr.KeyID()
			wantKID, _ := key.KeyID()
			if typ != "at+jwt" || kid != wantKID {
				t.Errorf("header typ=%q kid=%q, want at+jwt and %q", typ, kid, wantKID)
			}

			data, err := os.ReadFile(filepath.Join(dir, fileCheck))
			if err != nil {
				t.Fatal(err)
			}
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(data, &req); err != nil {
				t.Fatalf("check.json: %v", err)
			}
			if got := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]; got != "Bearer "+token {
				t.Errorf("authorization header = %q, want the token", got)
			}

			assertProtoset(t, filepath.Join(dir, fileProtoset))
			if !strings.Contains(out.String(), loadSubject) || strings.Contains(out.String(), token) {
				t.Errorf("prep output %q: want a summary naming the subject and never the token", out.String())
			}
		})
	}
}

func isPrivate(key jwk.Key) bool {
	switch key.(type) {
	case jwk.ECDSAPrivateKey, jwk.RSAPrivateKey, jwk.OKPPrivateKey:
		return true
	}
	return false
}

// assertProtoset checks that the file is a self-contained descriptor set
// (ghz resolves imports only from within it) describing Check.
func assertProtoset(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatalf("protoset: %v", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("protoset is not self-contained: %v", err)
	}
	d, err := files.FindDescriptorByName("envoy.service.auth.v3.Authorization")
	if err != nil {
		t.Fatalf("protoset lacks the Authorization service: %v", err)
	}
	svc, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("envoy.service.auth.v3.Authorization is a %T, not a service", d)
	}
	if svc.Methods().ByName("Check") == nil {
		t.Fatal("the Authorization service in the protoset has no Check method")
	}
	if d.ParentFile().Path() != "envoy/service/auth/v3/external_auth.proto" {
		t.Errorf("service defined in %s", d.ParentFile().Path())
	}
}

// authz answers every Check with a fixed response.
type authz struct {
	resp *authv3.CheckResponse
}

func (a authz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.resp, nil
}

func serveAuthz(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, authz{resp})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func TestPreflightOverLoopback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := run(context.Background(), []string{"prep", "--dir", dir}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, fileCheck)
	ok := &status.Status{Code: int32(codes.OK)}
	identity := []*corev3.HeaderValueOption{
		header("x-user-id", loadSubject), header("x-user-name", loadName), header("x-user-roles", "reader,writer"),
	}
	tests := []struct {
		name     string
		resp     *authv3.CheckResponse
		identity bool
		wantErr  string
	}{
		{"bare allow", &authv3.CheckResponse{Status: ok, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, false, ""},
		{"allow with identity", &authv3.CheckResponse{Status: ok, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: identity}}}, true, ""},
		{"allow without identity", &authv3.CheckResponse{Status: ok, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: identity[:1]}}}, true, "x-user-name"},
		{"denied", &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.Unauthenticated)}, HttpResponse: &authv3.CheckResponse_DeniedResponse{
			DeniedResponse: &authv3.DeniedHttpResponse{Body: `{"error":"invalid_token"}`},
		}}, false, "invalid_token"},
		{"OK without ok_response", &authv3.CheckResponse{Status: ok}, false, "no ok_response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"preflight", "--addr", serveAuthz(t, tt.resp), "--data", data}
			if tt.identity {
				args = append(args, "--identity")
			}
			err := run(context.Background(), args, &bytes.Buffer{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("preflight: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("preflight error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestPortsAreDistinct(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ports", "-n", "4"}, &out); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range strings.Fields(out.String()) {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			t.Errorf("not a port: %q", p)
		}
		seen[p] = true
	}
	if len(seen) != 4 {
		t.Errorf("ports %q: want 4 distinct", out.String())
	}
}

// writeGHZ writes a result file shaped like ghz -O json.
func writeGHZ(t *testing.T, path string, count int, rps float64, p50, p99 time.Duration, notOK int) {
	t.Helper()
	codes := fmt.Sprintf(`{"OK": %d}`, count-notOK)
	if notOK > 0 {
		codes = fmt.Sprintf(`{"OK": %d, "Unavailable": %d}`, count-notOK, notOK)
	}
	total := time.Duration(float64(count) / rps * float64(time.Second))
	body := fmt.Sprintf(`{"count": %d, "total": %d, "rps": %g,
		"latencyDistribution": [{"percentage": 10, "latency": 1}, {"percentage": 50, "latency": %d}, {"percentage": 99, "latency": %d}],
		"statusCodeDistribution": %s, "errorDistribution": {}, "details": [{"latency": 5}]}`,
		count, total, rps, p50, p99, codes)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReportMediansAndRatios(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Three rounds, 10000 requests each. noop: 5000, 4000, 6000 rps; tokengate:
	// 4500, 3000, 4800 → medians 5000 and 4500, ratio 0.90; per-round ratios
	// 0.90, 0.75, 0.80 → median 0.80. CPU at CLK_TCK=100: noop 20 ticks =
	// 200 ms / 10000 = 20 µs; tokengate 25 ticks = 25 µs → capacity 0.80.
	noopRPS := []float64{5000, 4000, 6000}
	oursRPS := []float64{4500, 3000, 4800}
	for i := range 3 {
		r := i + 1
		writeGHZ(t, filepath.Join(dir, fmt.Sprintf("grpc-r%d-noop.json", r)), 10000, noopRPS[i], time.Duration(r)*time.Millisecond, 10*time.Millisecond, 0)
		writeGHZ(t, filepath.Join(dir, fmt.Sprintf("grpc-r%d-tokengate.json", r)), 10000, oursRPS[i], time.Duration(r+1)*time.Millisecond, 20*time.Millisecond, 0)
		writeFile(t, filepath.Join(dir, fmt.Sprintf("grpc-r%d-noop.cpu", r)), "1000 1020\n")
		writeFile(t, filepath.Join(dir, fmt.Sprintf("grpc-r%d-tokengate.cpu", r)), "3000 3025\n")
	}
	// One HTTP round from wrk: 20000 requests in 2 s vs 18000 in 2 s.
	writeFile(t, filepath.Join(dir, "http-r1-noop.json"), `{"requests":20000,"duration_us":2000000,"p50_us":1000,"p99_us":4000,"non2xx":0,"socket_errors":0}`)
	writeFile(t, filepath.Join(dir, "http-r1-tokengate.json"), `{"requests":18000,"duration_us":2000000,"p50_us":1200,"p99_us":5000,"non2xx":0,"socket_errors":0}`)

	var out bytes.Buffer
	if err := run(context.Background(), []string{"report", "--dir", dir, "--clk-tck", "100"}, &out); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"| noop | 5000 | 2.00 ms | 10.00 ms | 20.0 µs |",
		"| tokengate | 4500 | 3.00 ms | 20.00 ms | 25.0 µs |",
		"| **tokengate / noop** | **0.90×** | 1.50× | 2.00× | 1.25× |",
		"per round 0.90, 0.75, 0.80, median 0.80×",
		"capacity ratio (noop CPU per request ÷ tokengate CPU per request): 0.80×",
		"| 2 | tokengate | 3000 | 3.00 ms | 20.00 ms | 25.0 µs | 8% | 0 |",
		"#### HTTP forward-auth",
		"| noop | 10000 | 1.00 ms | 4.00 ms | n/a |",
		"| **tokengate / noop** | **0.90×** | 1.20× | 1.25× | n/a |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q\n%s", want, got)
		}
	}
}

func TestReportFailsOnErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		ghz     map[string]int // file → requests that were not OK
		wantErr string
	}{
		{
			name:    "gRPC errors",
			ghz:     map[string]int{"grpc-r1-noop.json": 0, "grpc-r1-tokengate.json": 7},
			wantErr: "grpc round 1 tokengate: 7 failed requests",
		},
		{
			name: "HTTP denials",
			files: map[string]string{
				"http-r1-noop.json":      `{"requests":100,"duration_us":1000000,"p50_us":1,"p99_us":2,"non2xx":0,"socket_errors":0}`,
				"http-r1-tokengate.json": `{"requests":100,"duration_us":1000000,"p50_us":1,"p99_us":2,"non2xx":100,"socket_errors":0}`,
			},
			wantErr: "http round 1 tokengate: 100 failed requests",
		},
		{
			name:    "round missing one server",
			ghz:     map[string]int{"grpc-r1-noop.json": 0},
			wantErr: "round 1 of grpc has no result for tokengate",
		},
		{
			name:    "nothing to report",
			wantErr: "no results",
		},
		{
			name: "bad CPU file",
			ghz:  map[string]int{"grpc-r1-noop.json": 0, "grpc-r1-tokengate.json": 0},
			files: map[string]string{
				"grpc-r1-noop.cpu": "12",
			},
			wantErr: "TICKS_BEFORE TICKS_AFTER",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, notOK := range tt.ghz {
				writeGHZ(t, filepath.Join(dir, name), 100, 1000, time.Millisecond, 2*time.Millisecond, notOK)
			}
			for name, body := range tt.files {
				writeFile(t, filepath.Join(dir, name), body)
			}
			err := run(context.Background(), []string{"report", "--dir", dir}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("report error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		in := append([]float64(nil), tt.in...)
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if diff := cmp.Diff(in, tt.in); diff != "" {
			t.Errorf("median changed its input (-before +after):\n%s", diff)
		}
	}
}
