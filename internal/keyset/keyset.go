// Package keyset loads, generates and stores the refresher's signing keys: one
// active private key that signs, plus every public key that may still verify a
// live token (the next key during a rotation, the previous one until its
// tokens have expired). Both services use it: the refresher to sign, and
// `tokengate dev` / `tokengate extauthz --dev` to make a key for local use.
package keyset

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Keys is a loaded key set.
type Keys struct {
	// Signer is the active private key; it carries kid (RFC 7638 thumbprint,
	// unless the file set one) and alg.
	Signer jwk.Key
	// Public holds the public half of every key in the file, the signer's
	// first; this is what JWKS publishes.
	Public jwk.Set
}

// Algorithms the refresher can sign with.
var signingAlgs = map[string]jwa.SignatureAlgorithm{
	"ES256": jwa.ES256(), "ES384": jwa.ES384(), "RS256": jwa.RS256(), "PS256": jwa.PS256(), "EdDSA": jwa.EdDSA(),
}

// ParseAlg returns the signature algorithm for a name from the supported list.
func ParseAlg(name string) (jwa.SignatureAlgorithm, error) {
	alg, ok := signingAlgs[name]
	if !ok {
		return jwa.EmptySignatureAlgorithm(), fmt.Errorf("unsupported signing algorithm %q (use ES256, ES384, RS256, PS256 or EdDSA)", name)
	}
	return alg, nil
}

// Generate makes a new private key for alg with kid and alg set.
func Generate(alg jwa.SignatureAlgorithm) (jwk.Key, error) {
	var raw any
	var err error
	switch alg.String() {
	case "ES256":
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		raw, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "RS256", "PS256":
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EdDSA":
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("import generated key: %w", err)
	}
	if err := prepare(key, alg); err != nil {
		return nil, err
	}
	return key, nil
}

// prepare sets alg (inferred from the key type when absent and fallback is
// empty), use=sig and a thumbprint kid where none is set.
func prepare(key jwk.Key, fallback jwa.SignatureAlgorithm) error {
	if _, ok := key.Algorithm(); !ok {
		alg := fallback
		if alg == jwa.EmptySignatureAlgorithm() {
			var err error
			if alg, err = defaultAlg(key); err != nil {
				return err
			}
		}
		if err := key.Set(jwk.AlgorithmKey, alg); err != nil {
			return fmt.Errorf("set alg: %w", err)
		}
	}
	if err := key.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return fmt.Errorf("set use: %w", err)
	}
	if err := jwk.AssignKeyID(key, jwk.WithThumbprintHash(crypto.SHA256)); err != nil {
		return fmt.Errorf("assign kid: %w", err)
	}
	return nil
}

// defaultAlg picks the algorithm for a key that does not name one.
func defaultAlg(key jwk.Key) (jwa.SignatureAlgorithm, error) {
	switch key.KeyType().String() {
	case "EC":
		crv, _ := key.(jwk.ECDSAPrivateKey)
		if crv != nil {
			if c, ok := crv.Crv(); ok && c.String() == "P-384" {
				return jwa.ES384(), nil
			}
		}
		if pub, ok := key.(jwk.ECDSAPublicKey); ok {
			if c, ok := pub.Crv(); ok && c.String() == "P-384" {
				return jwa.ES384(), nil
			}
		}
		return jwa.ES256(), nil
	case "RSA":
		return jwa.RS256(), nil
	case "OKP":
		return jwa.EdDSA(), nil
	}
	return jwa.EmptySignatureAlgorithm(), fmt.Errorf("key type %s cannot sign (use EC, RSA or OKP)", key.KeyType())
}

// Load reads a key file: a PEM file with one or more private (or public)
// keys, a single JWK, or a JWK set. The active signer is the private key whose
// kid is activeKID, or the first private key when activeKID is empty. Every
// other key is published only.
func Load(path, activeKID string) (*Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	keys, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse signing key %s: %w", path, err)
	}
	return assemble(keys, activeKID)
}

func parse(data []byte) ([]jwk.Key, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "-----BEGIN") {
		var keys []jwk.Key
		rest := []byte(trimmed)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			raw, err := parsePEMBlock(block)
			if err != nil {
				return nil, err
			}
			key, err := jwk.Import(raw)
			if err != nil {
				return nil, fmt.Errorf("import PEM key: %w", err)
			}
			keys = append(keys, key)
		}
		if len(keys) == 0 {
			return nil, errors.New("no PEM key found")
		}
		return keys, nil
	}
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("neither PEM nor JSON: %w", err)
	}
	if probe.Keys == nil {
		key, err := jwk.ParseKey(data)
		if err != nil {
			return nil, err
		}
		return []jwk.Key{key}, nil
	}
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, err
	}
	keys := make([]jwk.Key, 0, set.Len())
	for i := range set.Len() {
		key, _ := set.Key(i)
		keys = append(keys, key)
	}
	return keys, nil
}

func parsePEMBlock(block *pem.Block) (any, error) {
	switch block.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

func assemble(keys []jwk.Key, activeKID string) (*Keys, error) {
	out := &Keys{Public: jwk.NewSet()}
	var publics []jwk.Key
	for i, key := range keys {
		if key.KeyType().String() == "oct" {
			return nil, fmt.Errorf("key %d: symmetric keys cannot be published; use EC, RSA or OKP", i)
		}
		if err := prepare(key, jwa.EmptySignatureAlgorithm()); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if alg, _ := key.Algorithm(); alg != nil {
			if _, err := ParseAlg(alg.String()); err != nil {
				return nil, fmt.Errorf("key %d: %w", i, err)
			}
		}
		private, err := jwk.IsPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		kid, _ := key.KeyID()
		if private && out.Signer == nil && (activeKID == "" || kid == activeKID) {
			out.Signer = key
		}
		pub, err := jwk.PublicKeyOf(key)
		if err != nil {
			return nil, fmt.Errorf("key %d: public half: %w", i, err)
		}
		publics = append(publics, pub)
	}
	if out.Signer == nil {
		if activeKID != "" {
			return nil, fmt.Errorf("no private key with kid %q in the key file", activeKID)
		}
		return nil, errors.New("the key file holds no private key to sign with")
	}
	signerKID, _ := out.Signer.KeyID()
	// The signer's public key first, then the others in file order.
	for _, pub := range publics {
		if kid, _ := pub.KeyID(); kid == signerKID {
			if err := out.Public.AddKey(pub); err != nil {
				return nil, err
			}
		}
	}
	for _, pub := range publics {
		if kid, _ := pub.KeyID(); kid != signerKID {
			if err := out.Public.AddKey(pub); err != nil {
				return nil, fmt.Errorf("publish key %s: %w", kid, err)
			}
		}
	}
	return out, nil
}

// LoadOrCreate loads path, or, when it does not exist, generates a key for alg
// and writes it there as a JWK (mode 0600, written atomically) so restarts keep
// issued tokens valid. It reports whether it created the file.
func LoadOrCreate(path string, alg jwa.SignatureAlgorithm) (*Keys, bool, error) {
	if _, err := os.Stat(path); err == nil {
		keys, err := Load(path, "")
		return keys, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("stat signing key: %w", err)
	}
	key, err := Generate(alg)
	if err != nil {
		return nil, false, err
	}
	data, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		return nil, false, fmt.Errorf("encode key: %w", err)
	}
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, false, err
	}
	keys, err := assemble([]jwk.Key{key}, "")
	return keys, true, err
}

// WriteFileAtomic writes data to a temporary file beside path and renames it
// into place, so a crash never leaves a half-written key.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// PublicJSON returns the public key set as JWKS JSON.
func (k *Keys) PublicJSON() ([]byte, error) {
	return json.Marshal(k.Public)
}

// SignerAlg returns the active signer's algorithm.
func (k *Keys) SignerAlg() jwa.SignatureAlgorithm {
	alg, _ := k.Signer.Algorithm()
	sa, _ := jwa.LookupSignatureAlgorithm(alg.String())
	return sa
}

// SignerKID returns the active signer's kid.
func (k *Keys) SignerKID() string {
	kid, _ := k.Signer.KeyID()
	return kid
}

// Assemble builds a key set from keys already in memory (generated, or
// parsed elsewhere), with the same rules as Load: the signer is the private
// key with kid activeKID (or the first private key), every key is published.
func Assemble(keys []jwk.Key, activeKID string) (*Keys, error) {
	return assemble(keys, activeKID)
}
