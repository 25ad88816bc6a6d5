package keyset

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

func TestGenerateEveryAlg(t *testing.T) {
	t.Parallel()
	for name := range signingAlgs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			alg, err := ParseAlg(name)
			if err != nil {
				t.Fatal(err)
			}
			key, err := Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := key.Algorithm(); got.String() != name {
				t.Fatalf("alg = %v, want %s", got, name)
			}
			if kid, ok := key.KeyID(); !ok || len(kid) != 43 {
				t.Fatalf("kid = %q, want a base64url SHA-256 thumbprint", kid)
			}
		})
	}
}

func TestLoadOrCreateKeepsKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dev", "signing.jwk")
	first, created, err := LoadOrCreate(path, jwa.ES256())
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
	second, created, err := LoadOrCreate(path, jwa.ES256())
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v err=%v", created, err)
	}
	if first.SignerKID() != second.SignerKID() {
		t.Fatalf("kid changed across restart: %s → %s", first.SignerKID(), second.SignerKID())
	}
	pub, err := second.PublicJSON()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(pub), `"d"`) {
		t.Fatalf("public JWKS leaks the private exponent: %s", pub)
	}
}

func TestLoadSetChoosesActiveAndPublishesAll(t *testing.T) {
	t.Parallel()
	oldKey, _ := Generate(jwa.ES256())
	nextKey, _ := Generate(jwa.EdDSA())
	set := jwk.NewSet()
	_ = set.AddKey(oldKey)
	_ = set.AddKey(nextKey)
	data, _ := json.Marshal(set)
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	nextKID, _ := nextKey.KeyID()
	keys, err := Load(path, nextKID)
	if err != nil {
		t.Fatal(err)
	}
	if keys.SignerKID() != nextKID || keys.SignerAlg() != jwa.EdDSA() {
		t.Fatalf("signer = %s %v, want %s EdDSA", keys.SignerKID(), keys.SignerAlg(), nextKID)
	}
	if keys.Public.Len() != 2 {
		t.Fatalf("published %d keys, want 2", keys.Public.Len())
	}
	first, _ := keys.Public.Key(0)
	if kid, _ := first.KeyID(); kid != nextKID {
		t.Fatalf("first published key = %s, want the signer %s", kid, nextKID)
	}
	if _, err := Load(path, "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown active kid: err = %v", err)
	}
}

func TestLoadPEM(t *testing.T) {
	t.Parallel()
	raw, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(raw)
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := Load(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if keys.SignerAlg() != jwa.ES384() {
		t.Fatalf("alg = %v, want ES384 inferred from P-384", keys.SignerAlg())
	}
}

func TestLoadRefusesPublicOnly(t *testing.T) {
	t.Parallel()
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&raw.PublicKey)
	path := filepath.Join(t.TempDir(), "pub.pem")
	_ = os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	if _, err := Load(path, ""); err == nil || !strings.Contains(err.Error(), "no private key") {
		t.Fatalf("err = %v, want 'no private key'", err)
	}
}
