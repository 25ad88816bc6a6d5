package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokengate/tokengate/internal/keyset"
)

// The files prep writes into --dir.
const (
	fileJWKS     = "jwks.json"      // public keys, for tokengate extauthz --jwks-file
	fileToken    = "token"          // the access token (for wrk's Authorization header)
	fileCheck    = "check.json"     // the CheckRequest, for ghz --data-file and preflight
	fileProtoset = "authz.protoset" // FileDescriptorSet of the ext_authz API, for ghz --protoset
)

// The identity the load token carries; preflight expects it back as headers.
const (
	loadSubject = "user-4711"
	loadName    = "Ada Lovelace"
)

var loadRoles = []string{"reader", "writer"}

func runPrep(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("prep", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write the key, token, request and protoset into (required)")
	issuer := fs.String("issuer", "https://issuer.load.test", "iss of the token")
	audience := fs.String("audience", "load-api", "aud of the token")
	ttl := fs.Duration("ttl", 2*time.Hour, "lifetime of the token; must outlast the whole run")
	algName := fs.String("alg", "ES256", "signing algorithm (ES256, ES384, RS256, PS256, EdDSA)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("prep: --dir is required")
	}
	alg, err := keyset.ParseAlg(*algName)
	if err != nil {
		return fmt.Errorf("prep: --alg: %w", err)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("prep: %w", err)
	}

	key, err := keyset.Generate(alg)
	if err != nil {
		return fmt.Errorf("prep: %w", err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		return fmt.Errorf("prep: public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return fmt.Errorf("prep: jwks: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("prep: jwks: %w", err)
	}
	token, err := signToken(key, alg, *issuer, *audience, time.Now(), *ttl)
	if err != nil {
		return fmt.Errorf("prep: %w", err)
	}
	check, err := protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}.Marshal(checkRequest(token))
	if err != nil {
		return fmt.Errorf("prep: check request: %w", err)
	}
	protoset, err := authzProtoset()
	if err != nil {
		return fmt.Errorf("prep: %w", err)
	}
	private, err := json.Marshal(key)
	if err != nil {
		return fmt.Errorf("prep: signing key: %w", err)
	}

	for name, data := range map[string][]byte{
		fileJWKS: jwks, fileToken: []byte(token), fileCheck: check, fileProtoset: protoset,
		fileSigningKey: private,
	} {
		if err := keyset.WriteFileAtomic(filepath.Join(*dir, name), data, 0o600); err != nil {
			return fmt.Errorf("prep: %w", err)
		}
	}
	kid, _ := key.KeyID()
	_, err = fmt.Fprintf(stdout, "prep: %s key kid=%s, token for sub=%s valid %s, files in %s\n", alg, kid, loadSubject, *ttl, *dir)
	return err
}

// signToken mints an access token shaped like the refresher's (RFC 9068:
// typ at+jwt, kid, iss/sub/aud/exp/iat/nbf/jti/sid plus custom claims).
func signToken(key jwk.Key, alg jwa.SignatureAlgorithm, issuer, audience string, now time.Time, ttl time.Duration) (string, error) {
	tok, err := jwt.NewBuilder().
		Issuer(issuer).
		Subject(loadSubject).
		Audience([]string{audience}).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(ttl)).
		JwtID(randomID()).
		Claim("sid", randomID()).
		Claim("name", loadName).
		Claim("roles", loadRoles).
		Claim("scope", "orders:read orders:write").
		Build()
	if err != nil {
		return "", fmt.Errorf("build token: %w", err)
	}
	hdrs := jws.NewHeaders()
	if err := hdrs.Set(jws.TypeKey, "at+jwt"); err != nil {
		return "", fmt.Errorf("set typ: %w", err)
	}
	kid, _ := key.KeyID()
	if err := hdrs.Set(jws.KeyIDKey, kid); err != nil {
		return "", fmt.Errorf("set kid: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, key, jws.WithProtectedHeaders(hdrs)))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return string(signed), nil
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

// checkRequest is what Envoy sends for a browser's API call: peer addresses,
// the HTTP attributes and the usual set of headers, pseudo-headers included.
func checkRequest(token string) *authv3.CheckRequest {
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	headers := map[string]string{
		":authority":        "app.example.com",
		":method":           "GET",
		":path":             "/api/orders/42?expand=items",
		":scheme":           "https",
		"accept":            "application/json",
		"accept-encoding":   "gzip, deflate, br",
		"authorization":     "Bearer " + token,
		"user-agent":        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"x-forwarded-for":   "203.0.113.7",
		"x-forwarded-proto": "https",
		"x-request-id":      "6f1c2b0e-8d0c-4a59-9b3e-2f5d1c7a9e10",
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr("203.0.113.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: addr("10.0.0.12", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       "6f1c2b0e-8d0c-4a59-9b3e-2f5d1c7a9e10",
				Method:   "GET",
				Headers:  headers,
				Path:     "/api/orders/42?expand=items",
				Host:     "app.example.com",
				Scheme:   "https",
				Protocol: "HTTP/2",
			},
		},
	}}
}

// authzProtoset returns a FileDescriptorSet with the ext_authz API and every
// file it imports, dependencies first, as protoc --include_imports would.
// It comes from the descriptors compiled into go-control-plane, so it is the
// exact API our servers serve.
func authzProtoset() ([]byte, error) {
	root, err := protoregistry.GlobalFiles.FindFileByPath(authv3.File_envoy_service_auth_v3_external_auth_proto.Path())
	if err != nil {
		return nil, fmt.Errorf("find ext_authz descriptor: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(root)
	out, err := proto.Marshal(&set)
	if err != nil {
		return nil, fmt.Errorf("encode protoset: %w", err)
	}
	return out, nil
}

func runPorts(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ports", flag.ContinueOnError)
	n := fs.Int("n", 1, "how many ports")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Hold every listener until all are chosen so the ports are distinct.
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range *n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("ports: %w", err)
		}
		lns = append(lns, ln)
		fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
