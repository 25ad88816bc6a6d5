package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/keyset"
)

// In-cluster service-account files, mounted by Kubernetes into every pod.
const (
	saDir       = "/var/run/secrets/kubernetes.io/serviceaccount"
	saTokenFile = saDir + "/token"
	saCAFile    = saDir + "/ca.crt"
	saNSFile    = saDir + "/namespace"
)

// keygenConfig is the parsed command line of `tokengate keygen`.
type keygenConfig struct {
	alg       string
	out       string
	force     bool
	ifMissing bool
	secret    string
	secretKey string
	namespace string
	apiURL    string
	tokenFile string
	caFile    string
	timeout   time.Duration
}

// runKeygen generates a signing key (keyset.Generate) and writes it as a
// private JWK to a file, to stdout, or into a Kubernetes Secret. The Secret
// path is what the Helm chart's pre-install/pre-upgrade hook runs: it creates
// the Secret only when it does not exist yet, so an upgrade keeps the key and
// every token it signed stays valid. It talks to the API server with plain
// net/http and the pod's service account, so the product binary carries no
// Kubernetes client library.
func runKeygen(ctx context.Context, e env) error {
	var c keygenConfig
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&c.alg, "alg", "ES256", "signing algorithm: ES256, ES384, RS256, PS256 or EdDSA")
	fs.StringVar(&c.out, "out", "-", "file to write the private JWK to (mode 0600); - for stdout; ignored with --kubernetes-secret")
	fs.BoolVar(&c.force, "force", false, "overwrite --out when it exists (a new key invalidates every token signed with the old one)")
	fs.BoolVar(&c.ifMissing, "if-missing", false, "when --out exists, keep it and succeed (for init containers and compose: run on every start, generate once)")
	fs.StringVar(&c.secret, "kubernetes-secret", "", "create this Kubernetes Secret holding the key, through the in-cluster API; does nothing when it already exists")
	fs.StringVar(&c.secretKey, "kubernetes-secret-key", "signing-key.jwk", "data key of the Secret that holds the JWK")
	fs.StringVar(&c.namespace, "kubernetes-namespace", "", "namespace of the Secret (default: the pod's own, from the service-account mount)")
	fs.StringVar(&c.apiURL, "kubernetes-api", "", "API server URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)")
	fs.StringVar(&c.tokenFile, "kubernetes-token-file", saTokenFile, "service-account bearer token file")
	fs.StringVar(&c.caFile, "kubernetes-ca-file", saCAFile, "CA bundle that signed the API server's certificate")
	fs.DurationVar(&c.timeout, "kubernetes-timeout", 30*time.Second, "give up on the API server after this long")
	fs.Usage = envflag.Usage(fs, "TOKENGATE_")
	if done, err := parseFlags(fs, e); done || err != nil {
		return err
	}
	alg, err := keyset.ParseAlg(c.alg)
	if err != nil {
		return fmt.Errorf("%w: --alg: %w", errUsage, err)
	}
	if c.secret != "" {
		return keygenSecret(ctx, e, c, func() ([]byte, string, error) { return newKeyJSON(alg) })
	}
	if c.force && c.ifMissing {
		return fmt.Errorf("%w: --force and --if-missing contradict each other", errUsage)
	}
	toStdout := c.out == "-" || c.out == ""
	if !toStdout && !c.force {
		if _, err := os.Stat(c.out); err == nil {
			if c.ifMissing {
				_, err := fmt.Fprintf(e.stderr, "%s exists; keeping its key\n", c.out)
				return err
			}
			return fmt.Errorf("%s exists; keeping it (pass --force to replace the key, which invalidates every token it signed, or --if-missing to succeed)", c.out)
		}
	}
	data, kid, err := newKeyJSON(alg)
	if err != nil {
		return err
	}
	if toStdout {
		_, err := e.stdout.Write(append(data, '\n'))
		return err
	}
	if err := keyset.WriteFileAtomic(c.out, append(data, '\n'), 0o600); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stderr, "wrote %s key %s to %s\n", alg, kid, c.out)
	return err
}

// newKeyJSON generates a key and encodes it as a private JWK, the format
// `tokengate refresher --signing-key` reads.
func newKeyJSON(alg jwa.SignatureAlgorithm) ([]byte, string, error) {
	key, err := keyset.Generate(alg)
	if err != nil {
		return nil, "", err
	}
	data, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("encode key: %w", err)
	}
	kid, _ := key.KeyID()
	return data, kid, nil
}

// keygenSecret creates the Secret unless it exists. The key is generated only
// when it will be stored, and is never printed.
func keygenSecret(ctx context.Context, e env, c keygenConfig, generate func() ([]byte, string, error)) error {
	api, err := newKubeAPI(c, e.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	where := api.namespace + "/" + c.secret
	exists, err := api.secretExists(ctx, c.secret)
	if err != nil {
		return err
	}
	if exists {
		_, err := fmt.Fprintf(e.stderr, "Secret %s exists; keeping its key\n", where)
		return err
	}
	data, kid, err := generate()
	if err != nil {
		return err
	}
	created, err := api.createSecret(ctx, c.secret, map[string][]byte{c.secretKey: append(data, '\n')})
	if err != nil {
		return err
	}
	if !created {
		// Another hook run won the race; its key is the one to keep.
		_, err := fmt.Fprintf(e.stderr, "Secret %s was created meanwhile; keeping its key\n", where)
		return err
	}
	_, err = fmt.Fprintf(e.stderr, "created Secret %s with %s key %s\n", where, c.alg, kid)
	return err
}

// kubeAPI is the sliver of the Kubernetes API keygen needs.
type kubeAPI struct {
	base      *url.URL
	token     string
	namespace string
	client    *http.Client
}

func newKubeAPI(c keygenConfig, getenv func(string) string) (*kubeAPI, error) {
	raw := c.apiURL
	if raw == "" {
		host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return nil, fmt.Errorf("%w: --kubernetes-secret needs the in-cluster API (KUBERNETES_SERVICE_HOST/PORT are unset) or --kubernetes-api", errUsage)
		}
		raw = "https://" + net.JoinHostPort(host, port)
	}
	base, err := url.Parse(raw)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("%w: --kubernetes-api %q: must be an https URL", errUsage, raw)
	}
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read service-account token: %w", err)
	}
	caPEM, err := os.ReadFile(c.caFile)
	if err != nil {
		return nil, fmt.Errorf("read API server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no PEM certificate found", c.caFile)
	}
	ns := c.namespace
	if ns == "" {
		b, err := os.ReadFile(saNSFile)
		if err != nil {
			return nil, fmt.Errorf("%w: --kubernetes-namespace is unset and the pod namespace is unreadable: %w", errUsage, err)
		}
		ns = strings.TrimSpace(string(b))
	}
	return &kubeAPI{
		base:      base,
		token:     strings.TrimSpace(string(token)),
		namespace: ns,
		client: &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

func (k *kubeAPI) secretsURL(name string) string {
	u := k.base.JoinPath("api", "v1", "namespaces", k.namespace, "secrets")
	if name != "" {
		u = u.JoinPath(name)
	}
	return u.String()
}

func (k *kubeAPI) do(ctx context.Context, method, target string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("kubernetes API %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("kubernetes API %s %s: %w", method, req.URL.Path, err)
	}
	return resp.StatusCode, out, nil
}

func (k *kubeAPI) secretExists(ctx context.Context, name string) (bool, error) {
	status, body, err := k.do(ctx, http.MethodGet, k.secretsURL(name), nil)
	if err != nil {
		return false, err
	}
	switch status {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, apiError("get Secret "+k.namespace+"/"+name, status, body)
}

// createSecret reports false when the Secret already exists (409).
func (k *kubeAPI) createSecret(ctx context.Context, name string, data map[string][]byte) (bool, error) {
	secret := map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "Opaque",
		"metadata": map[string]any{
			"name":      name,
			"namespace": k.namespace,
			"labels": map[string]string{
				"app.kubernetes.io/name":       "tokengate",
				"app.kubernetes.io/component":  "signing-key",
				"app.kubernetes.io/managed-by": "tokengate-keygen",
			},
		},
		"data": data, // []byte marshals as base64, as the API expects
	}
	body, err := json.Marshal(secret)
	if err != nil {
		return false, err
	}
	status, resp, err := k.do(ctx, http.MethodPost, k.secretsURL(""), body)
	if err != nil {
		return false, err
	}
	switch status {
	case http.StatusCreated, http.StatusOK:
		return true, nil
	case http.StatusConflict:
		return false, nil
	}
	return false, apiError("create Secret "+k.namespace+"/"+name, status, resp)
}

// apiError turns a Kubernetes Status answer into an error that names the
// operation and keeps the API server's own message (which says, e.g., which
// RBAC verb is missing).
func apiError(op string, status int, body []byte) error {
	var st struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return fmt.Errorf("%s: %d %s: %s", op, status, st.Reason, st.Message)
	}
	return fmt.Errorf("%s: HTTP %d: %.200s", op, status, body)
}
