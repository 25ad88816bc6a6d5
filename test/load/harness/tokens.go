package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/protobuf/encoding/protojson"
)

// fileSigningKey is the private key prep keeps so `harness tokens` can mint
// more tokens that tokengate (given jwks.json) accepts. It stays in the run's
// directory (mode 0600) and is a throwaway made for the run.
const fileSigningKey = "signing-key.json"

// runTokens writes ghz data files for the uncached path: each file is a JSON
// array of CheckRequests, each with its own freshly signed token (distinct
// jti and sid), and no token appears twice across all the files. ghz sends
// the elements of an array in turn (request i gets element i mod n), so a
// round of exactly --per-file requests sends every token once.
func runTokens(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory prep wrote into (required); the files go there too")
	prefix := fs.String("prefix", "uncached", "file names: PREFIX-1.json … PREFIX-N.json")
	files := fs.Int("files", 1, "how many files")
	perFile := fs.Int("per-file", 1000, "distinct tokens (CheckRequests) per file")
	issuer := fs.String("issuer", "https://issuer.load.test", "iss of the tokens")
	audience := fs.String("audience", "load-api", "aud of the tokens")
	ttl := fs.Duration("ttl", 2*time.Hour, "lifetime of the tokens; must outlast the whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *files < 1 || *perFile < 1 {
		return fmt.Errorf("tokens: --dir is required, --files and --per-file must be ≥ 1")
	}
	key, alg, err := readSigningKey(*dir)
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	now := time.Now()
	for f := 1; f <= *files; f++ {
		tokens, err := signMany(key, alg, *issuer, *audience, now, *ttl, *perFile)
		if err != nil {
			return fmt.Errorf("tokens: %w", err)
		}
		path := filepath.Join(*dir, fmt.Sprintf("%s-%d.json", *prefix, f))
		if err := writeCheckArray(path, tokens); err != nil {
			return fmt.Errorf("tokens: %w", err)
		}
	}
	_, err = fmt.Fprintf(stdout, "tokens: %d files × %d distinct tokens in %s\n", *files, *perFile, *dir)
	return err
}

func readSigningKey(dir string) (jwk.Key, jwa.SignatureAlgorithm, error) {
	raw, err := os.ReadFile(filepath.Join(dir, fileSigningKey))
	if err != nil {
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("signing key (run prep first): %w", err)
	}
	key, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("signing key: %w", err)
	}
	algv, ok := key.Algorithm()
	if !ok {
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("signing key has no alg")
	}
	alg, ok := jwa.LookupSignatureAlgorithm(algv.String())
	if !ok {
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("signing key: unknown alg %q", algv.String())
	}
	return key, alg, nil
}

// signMany signs n tokens on all CPUs (each has a random jti and sid).
func signMany(key jwk.Key, alg jwa.SignatureAlgorithm, issuer, audience string, now time.Time, ttl time.Duration, n int) ([]string, error) {
	out := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				out[i], errs[i] = signToken(key, alg, issuer, audience, now, ttl)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// writeCheckArray writes a JSON array of CheckRequests, one per token, in
// protojson's field names as ghz expects.
func writeCheckArray(path string, tokens []string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	// bufio.Writer keeps its first error and returns it from Flush.
	w := bufio.NewWriter(f)
	_, _ = w.WriteString("[")
	for i, tok := range tokens {
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(checkRequest(tok))
		if err != nil {
			f.Close()
			return fmt.Errorf("check request: %w", err)
		}
		if i > 0 {
			_, _ = w.WriteString(",\n")
		}
		_, _ = w.Write(js)
	}
	_, _ = w.WriteString("]\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
