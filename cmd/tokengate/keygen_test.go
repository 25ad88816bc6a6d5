package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/internal/keyset"
)

// fakeKubeAPI is a process edge: the Kubernetes API server, as far as keygen
// uses it (get and create a Secret), over real TLS on loopback.
type fakeKubeAPI struct {
	srv   *httptest.Server
	token string

	mu       sync.Mutex
	secrets  map[string]map[string]any // "ns/name" → object
	requests []string                  // "METHOD path"
	// conflictOnCreate makes POST answer 409, as when another hook run
	// created the Secret between our GET and POST.
	conflictOnCreate bool
	forbidCreate     bool
}

func newFakeKubeAPI(t *testing.T) *fakeKubeAPI {
	f := &fakeKubeAPI{token: "sa-token-123", secrets: map[string]map[string]any{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKubeAPI) status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": msg, "code": code})
}

func (f *fakeKubeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		f.status(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// api/v1/namespaces/NS/secrets[/NAME]
	if len(parts) < 5 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" || parts[4] != "secrets" {
		f.status(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	ns := parts[3]
	switch {
	case r.Method == http.MethodGet && len(parts) == 6:
		obj, ok := f.secrets[ns+"/"+parts[5]]
		if !ok {
			f.status(w, http.StatusNotFound, "NotFound", `secrets "`+parts[5]+`" not found`)
			return
		}
		json.NewEncoder(w).Encode(obj)
	case r.Method == http.MethodPost && len(parts) == 5:
		if r.Header.Get("Content-Type") != "application/json" {
			f.status(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", "want JSON")
			return
		}
		if f.forbidCreate {
			f.status(w, http.StatusForbidden, "Forbidden", `secrets is forbidden: User "system:serviceaccount:`+ns+`:keygen" cannot create resource "secrets"`)
			return
		}
		var obj map[string]any
		dec := json.NewDecoder(r.Body)
		if err := dec.Decode(&obj); err != nil {
			f.status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		name, _ := obj["metadata"].(map[string]any)["name"].(string)
		if _, ok := f.secrets[ns+"/"+name]; ok || f.conflictOnCreate {
			f.status(w, http.StatusConflict, "AlreadyExists", `secrets "`+name+`" already exists`)
			return
		}
		f.secrets[ns+"/"+name] = obj
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(obj)
	default:
		f.status(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method)
	}
}

// files writes the service-account token and CA files keygen reads.
func (f *fakeKubeAPI) files(t *testing.T, token string) (tokenFile, caFile string) {
	dir := t.TempDir()
	tokenFile = filepath.Join(dir, "token")
	caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return tokenFile, caFile
}

// loadSecretKey checks the stored Secret holds a key the refresher can load.
func loadSecretKey(t *testing.T, obj map[string]any, dataKey string) *keyset.Keys {
	t.Helper()
	raw, err := json.Marshal(obj["data"])
	if err != nil {
		t.Fatal(err)
	}
	var data map[string][]byte // base64 in JSON, decoded here
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatalf("Secret data is not base64: %v", err)
	}
	path := filepath.Join(t.TempDir(), "key.jwk")
	if err := os.WriteFile(path, data[dataKey], 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := keyset.Load(path, "")
	if err != nil {
		t.Fatalf("stored key does not load: %v", err)
	}
	return keys
}

func TestKeygenKubernetesSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		existing     bool
		conflict     bool
		forbid       bool
		token        string // service-account token presented; default the right one
		viaEnv       bool   // find the API through KUBERNETES_SERVICE_HOST/PORT
		extraArgs    []string
		wantErr      string
		wantCreated  bool
		wantRequests []string
		wantStderr   string
	}{
		{
			name:         "creates the Secret when absent",
			wantCreated:  true,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key", "POST /api/v1/namespaces/auth/secrets"},
			wantStderr:   "created Secret auth/tg-key with ES256 key ",
		},
		{
			name:         "in-cluster address from the environment",
			viaEnv:       true,
			wantCreated:  true,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key", "POST /api/v1/namespaces/auth/secrets"},
			wantStderr:   "created Secret auth/tg-key",
		},
		{
			name:         "EdDSA key under a custom data key",
			extraArgs:    []string{"--alg", "EdDSA", "--kubernetes-secret-key", "key.json"},
			wantCreated:  true,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key", "POST /api/v1/namespaces/auth/secrets"},
			wantStderr:   "with EdDSA key",
		},
		{
			name:         "keeps an existing Secret (upgrade)",
			existing:     true,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key"},
			wantStderr:   "Secret auth/tg-key exists; keeping its key",
		},
		{
			name:         "lost the create race",
			conflict:     true,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key", "POST /api/v1/namespaces/auth/secrets"},
			wantStderr:   "was created meanwhile; keeping its key",
		},
		{
			name:         "RBAC refuses create",
			forbid:       true,
			wantErr:      `create Secret auth/tg-key: 403 Forbidden: secrets is forbidden: User "system:serviceaccount:auth:keygen" cannot create resource "secrets"`,
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key", "POST /api/v1/namespaces/auth/secrets"},
		},
		{
			name:         "wrong service-account token",
			token:        "stale",
			wantErr:      "get Secret auth/tg-key: 401 Unauthorized",
			wantRequests: []string{"GET /api/v1/namespaces/auth/secrets/tg-key"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			api := newFakeKubeAPI(t)
			api.conflictOnCreate = tc.conflict
			api.forbidCreate = tc.forbid
			if tc.existing {
				api.secrets["auth/tg-key"] = map[string]any{"metadata": map[string]any{"name": "tg-key"}, "data": map[string]any{"signing-key.jwk": "b2xk"}}
			}
			token := api.token
			if tc.token != "" {
				token = tc.token
			}
			tokenFile, caFile := api.files(t, token)
			args := []string{"keygen", "--kubernetes-secret", "tg-key", "--kubernetes-namespace", "auth",
				"--kubernetes-token-file", tokenFile, "--kubernetes-ca-file", caFile}
			envs := map[string]string{}
			if tc.viaEnv {
				host, port, _ := net.SplitHostPort(strings.TrimPrefix(api.srv.URL, "https://"))
				envs["KUBERNETES_SERVICE_HOST"], envs["KUBERNETES_SERVICE_PORT"] = host, port
			} else {
				args = append(args, "--kubernetes-api", api.srv.URL)
			}
			args = append(args, tc.extraArgs...)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, func(k string) string { return envs[k] }, &stdout, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("keygen error = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("keygen: %v", err)
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if diff := cmp.Diff(tc.wantRequests, api.requests); diff != "" {
				t.Errorf("API requests (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q; the key must never be printed when it goes to a Secret", stdout.String())
			}
			obj := api.secrets["auth/tg-key"]
			if !tc.wantCreated {
				if tc.existing && obj["data"].(map[string]any)["signing-key.jwk"] != "b2xk" {
					t.Errorf("existing Secret was changed: %v", obj)
				}
				return
			}
			if obj == nil {
				t.Fatal("Secret was not created")
			}
			dataKey := "signing-key.jwk"
			alg := "ES256"
			if len(tc.extraArgs) > 0 {
				dataKey, alg = "key.json", "EdDSA"
			}
			keys := loadSecretKey(t, obj, dataKey)
			if got := keys.SignerAlg().String(); got != alg {
				t.Errorf("stored key alg = %s, want %s", got, alg)
			}
			if !strings.Contains(stderr.String(), keys.SignerKID()) {
				t.Errorf("stderr %q does not name the kid %s", stderr.String(), keys.SignerKID())
			}
			wantMeta := map[string]any{
				"name": "tg-key", "namespace": "auth",
				"labels": map[string]any{"app.kubernetes.io/name": "tokengate", "app.kubernetes.io/component": "signing-key", "app.kubernetes.io/managed-by": "tokengate-keygen"},
			}
			if diff := cmp.Diff(wantMeta, obj["metadata"]); diff != "" {
				t.Errorf("Secret metadata (-want +got):\n%s", diff)
			}
			if obj["type"] != "Opaque" || obj["kind"] != "Secret" || obj["apiVersion"] != "v1" {
				t.Errorf("Secret header = %v %v %v", obj["apiVersion"], obj["kind"], obj["type"])
			}
		})
	}
}

func TestKeygenKubernetesErrors(t *testing.T) {
	t.Parallel()
	api := newFakeKubeAPI(t)
	tokenFile, caFile := api.files(t, api.token)
	// A CA that did not sign the API server's certificate (every httptest
	// TLS server shares one certificate, so make a fresh one).
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other.crt")
	os.WriteFile(otherCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	base := []string{"keygen", "--kubernetes-secret", "k", "--kubernetes-namespace", "ns", "--kubernetes-token-file", tokenFile}
	tests := []struct {
		name      string
		args      []string
		wantErr   string
		wantUsage bool
	}{
		{"not in a cluster", append(base, "--kubernetes-ca-file", caFile), "KUBERNETES_SERVICE_HOST/PORT are unset", true},
		{"plain http API", append(base, "--kubernetes-ca-file", caFile, "--kubernetes-api", "http://127.0.0.1:1"), "must be an https URL", true},
		{"untrusted API certificate", append(base, "--kubernetes-ca-file", otherCA, "--kubernetes-api", api.srv.URL), "certificate", false},
		{"missing token file", []string{"keygen", "--kubernetes-secret", "k", "--kubernetes-namespace", "ns", "--kubernetes-token-file", "/nonexistent/token", "--kubernetes-ca-file", caFile, "--kubernetes-api", api.srv.URL}, "read service-account token", false},
		{"CA file without a certificate", append(base, "--kubernetes-ca-file", tokenFile, "--kubernetes-api", api.srv.URL), "no PEM certificate found", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run(context.Background(), tc.args, func(string) string { return "" }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
			if errors.Is(err, errUsage) != tc.wantUsage {
				t.Errorf("usage error = %v, want %v", errors.Is(err, errUsage), tc.wantUsage)
			}
		})
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.secrets) != 0 {
		t.Errorf("a failed run created %v", api.secrets)
	}
}

func TestKeygenFile(t *testing.T) {
	t.Parallel()
	t.Run("stdout", func(t *testing.T) {
		t.Parallel()
		var stdout bytes.Buffer
		if err := run(context.Background(), []string{"keygen", "--alg", "ES384"}, func(string) string { return "" }, &stdout, io.Discard); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "k.jwk")
		os.WriteFile(path, stdout.Bytes(), 0o600)
		keys, err := keyset.Load(path, "")
		if err != nil {
			t.Fatalf("stdout key does not load: %v", err)
		}
		if keys.SignerAlg().String() != "ES384" {
			t.Errorf("alg = %s", keys.SignerAlg())
		}
	})
	t.Run("--if-missing creates a missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "k.jwk")
		if err := run(context.Background(), []string{"keygen", "--if-missing", "--out", path}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := keyset.Load(path, ""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("file, never overwritten without --force", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sub", "signing.jwk")
		getenv := func(k string) string { return map[string]string{"TOKENGATE_OUT": path}[k] }
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"keygen"}, getenv, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		if stdout.Len() != 0 {
			t.Errorf("key printed to stdout while writing a file")
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", st.Mode().Perm())
		}
		first, err := keyset.Load(path, "")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stderr.String(), first.SignerKID()) {
			t.Errorf("stderr %q does not name kid", stderr.String())
		}
		err = run(context.Background(), []string{"keygen"}, getenv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "exists; keeping it") {
			t.Fatalf("second keygen error = %v, want refusal", err)
		}
		if again, _ := keyset.Load(path, ""); again.SignerKID() != first.SignerKID() {
			t.Errorf("key replaced without --force")
		}
		stderr.Reset()
		if err := run(context.Background(), []string{"keygen", "--if-missing"}, getenv, io.Discard, &stderr); err != nil {
			t.Fatalf("--if-missing on an existing file: %v", err)
		}
		if again, _ := keyset.Load(path, ""); again.SignerKID() != first.SignerKID() {
			t.Errorf("--if-missing replaced the key")
		}
		if !strings.Contains(stderr.String(), "exists; keeping its key") {
			t.Errorf("stderr = %q", stderr.String())
		}
		if err := run(context.Background(), []string{"keygen", "--force"}, getenv, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		if again, _ := keyset.Load(path, ""); again.SignerKID() == first.SignerKID() {
			t.Errorf("--force kept the old key")
		}
	})
	t.Run("bad usage", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"keygen", "--alg", "HS256"}, {"keygen", "extra"}, {"keygen", "--force", "--if-missing", "--out", "x"}} {
			err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard)
			if !errors.Is(err, errUsage) {
				t.Errorf("%v: error = %v, want a usage error", args, err)
			}
		}
	})
}
