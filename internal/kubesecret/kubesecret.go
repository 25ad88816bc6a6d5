// Package kubesecret creates a Kubernetes Secret unless it exists, through
// the in-cluster API with plain net/http and the pod's service account, so
// the product binary carries no Kubernetes client library. `tokengate
// keygen` uses it to store a generated signing key once: an upgrade keeps
// the key, and every token it signed stays valid.
package kubesecret

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// In-cluster service-account files, mounted by Kubernetes into every pod.
const (
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	TokenFile         = ServiceAccountDir + "/token"
	CAFile            = ServiceAccountDir + "/ca.crt"
	NamespaceFile     = ServiceAccountDir + "/namespace"
)

// InClusterURL is the API server's URL from the environment Kubernetes
// sets in every pod; ok is false outside a cluster.
func InClusterURL(getenv func(string) string) (u string, ok bool) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", false
	}
	return "https://" + net.JoinHostPort(host, port), true
}

// Errors of New that are the caller's to fix.
var (
	ErrNotHTTPS    = errors.New("must be an https URL")
	ErrNoNamespace = errors.New("the pod namespace is unreadable")
)

// Config says which API server to talk to, as whom, and where.
type Config struct {
	APIURL    string // https://HOST:PORT
	TokenFile string // bearer token (the service account's)
	CAFile    string // CA bundle that signed the API server's certificate
	Namespace string // "": the pod's own (NamespaceFile)
}

// Client is the sliver of the Kubernetes API that creating a Secret needs.
type Client struct {
	base      *url.URL
	token     string
	namespace string
	http      *http.Client
}

// New checks the URL and reads the token, CA and (unless given) namespace
// files.
func New(c Config) (*Client, error) {
	base, err := url.Parse(c.APIURL)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("%q: %w", c.APIURL, ErrNotHTTPS)
	}
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read service-account token: %w", err)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read API server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no PEM certificate found", c.CAFile)
	}
	if c.Namespace == "" {
		b, err := os.ReadFile(NamespaceFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoNamespace, err)
		}
		c.Namespace = strings.TrimSpace(string(b))
	}
	return &Client{
		base:      base,
		token:     strings.TrimSpace(string(token)),
		namespace: c.Namespace,
		http: &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// Namespace is the namespace the client's Secrets live in.
func (k *Client) Namespace() string { return k.namespace }

func (k *Client) secretsURL(name string) string {
	u := k.base.JoinPath("api", "v1", "namespaces", k.namespace, "secrets")
	if name != "" {
		u = u.JoinPath(name)
	}
	return u.String()
}

func (k *Client) do(ctx context.Context, method, target string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.http.Do(req)
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

// Exists reports whether the Secret name exists.
func (k *Client) Exists(ctx context.Context, name string) (bool, error) {
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

// Create creates the Secret name holding data; it reports false when the
// Secret already exists (409: another run won the race).
func (k *Client) Create(ctx context.Context, name string, data map[string][]byte) (bool, error) {
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
