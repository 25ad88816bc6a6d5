package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/tokengate/tokengate/internal/envflag"
	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/internal/kubesecret"
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
// every token it signed stays valid (internal/kubesecret).
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
	fs.StringVar(&c.tokenFile, "kubernetes-token-file", kubesecret.TokenFile, "service-account bearer token file")
	fs.StringVar(&c.caFile, "kubernetes-ca-file", kubesecret.CAFile, "CA bundle that signed the API server's certificate")
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
	api, err := newKubeClient(c, e.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	where := api.Namespace() + "/" + c.secret
	exists, err := api.Exists(ctx, c.secret)
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
	created, err := api.Create(ctx, c.secret, map[string][]byte{c.secretKey: append(data, '\n')})
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

// newKubeClient resolves the --kubernetes-* flags (defaults: the pod's
// in-cluster API and namespace) into an API client.
func newKubeClient(c keygenConfig, getenv func(string) string) (*kubesecret.Client, error) {
	api := c.apiURL
	if api == "" {
		var ok bool
		if api, ok = kubesecret.InClusterURL(getenv); !ok {
			return nil, fmt.Errorf("%w: --kubernetes-secret needs the in-cluster API (KUBERNETES_SERVICE_HOST/PORT are unset) or --kubernetes-api", errUsage)
		}
	}
	k, err := kubesecret.New(kubesecret.Config{APIURL: api, TokenFile: c.tokenFile, CAFile: c.caFile, Namespace: c.namespace})
	switch {
	case errors.Is(err, kubesecret.ErrNotHTTPS):
		return nil, fmt.Errorf("%w: --kubernetes-api %q: must be an https URL", errUsage, api)
	case errors.Is(err, kubesecret.ErrNoNamespace):
		return nil, fmt.Errorf("%w: --kubernetes-namespace is unset and %w", errUsage, err)
	}
	return k, err
}
