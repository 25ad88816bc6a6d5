// Package devmode owns every development default of tokengate: where the
// generated key and admin token live, the issuer and audience dev tokens
// carry, the sample token, the revocation check of the one-process dev
// mode, and the walkthroughs it prints. `tokengate dev`, `tokengate
// refresher --dev` and `tokengate extauthz --dev` all take their defaults
// from here, and the values that are not dev-only (listen addresses, token
// lifetimes) come from the services' own Defaults/RunDefaults.
package devmode

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/refresher"
)

const (
	// Dir is where dev mode keeps its state (bolt file, keys, admin token).
	Dir = ".tokengate"
	// Audience is the aud of every dev token, on both services.
	Audience = "tokengate"
	// TokenTTL is the lifetime of extauthz's sample token.
	TokenTTL = time.Hour
)

// ExtauthzKeyPath is where `tokengate extauthz --dev` keeps its key, so
// restarts keep tokens valid (a variable: tests point it at a temp dir).
var ExtauthzKeyPath = filepath.Join(Dir, "extauthz-dev-key.json")

// Issuer is the iss of dev tokens for a refresher listening on listen:
// http://localhost:PORT ("http://localhost" when the port is not fixed).
func Issuer(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		return "http://localhost"
	}
	return "http://localhost:" + port
}

// DefaultIssuer is the dev issuer of a refresher on its default address,
// which `tokengate extauthz --dev` trusts.
func DefaultIssuer() string { return Issuer(refresher.RunDefaults().Listen) }

// LocalAddr names a bound address the way a user on this machine types
// it: localhost:PORT.
func LocalAddr(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return "localhost:" + port
}

// LocalURL is http://LocalAddr(a).
func LocalURL(a net.Addr) string { return "http://" + LocalAddr(a) }

// BoltDir returns the directory of a bolt:// store's file ("" for other
// stores): where dev mode keeps the generated key and admin token.
func BoltDir(storeURI string) string {
	if path, ok := strings.CutPrefix(storeURI, "bolt://"); ok && path != "" {
		return filepath.Dir(path)
	}
	return ""
}

// SigningKeys loads or creates the refresher's dev signing key in dir
// (signing-key.json), so restarts keep tokens valid; with dir "" (a store
// without a file) the key lives as long as the process, like the
// sessions of a memory store. path is "" in that case.
func SigningKeys(dir string, alg jwa.SignatureAlgorithm) (keys *keyset.Keys, path string, created bool, err error) {
	if dir == "" {
		k, err := keyset.Generate(alg)
		if err != nil {
			return nil, "", false, err
		}
		keys, err = keyset.Assemble([]jwk.Key{k}, "")
		return keys, "", true, err
	}
	path = filepath.Join(dir, "signing-key.json")
	keys, created, err = keyset.LoadOrCreate(path, alg)
	return keys, path, created, err
}

// AdminToken reads the dev admin token kept in dir (admin-token), creating
// it (256 random bits, mode 0600) when missing, where the user can read it.
func AdminToken(dir string) (token, path string, err error) {
	path = filepath.Join(dir, "admin-token")
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), path, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", path, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	s := base64.RawURLEncoding.EncodeToString(raw)
	return s, path, keyset.WriteFileAtomic(path, []byte(s+"\n"), 0o600)
}

// ExtauthzKey is what `tokengate extauthz --dev` trusts: its key's public
// JWKS and a sample token signed with it.
type ExtauthzKey struct {
	JWKS    []byte
	Token   string
	Created bool // the key file was generated now
}

// NewExtauthzKey loads or creates the ES256 key at ExtauthzKeyPath and
// signs a sample token (TokenTTL) for issuer and audience.
func NewExtauthzKey(issuer, audience string) (ExtauthzKey, error) {
	keys, created, err := keyset.LoadOrCreate(ExtauthzKeyPath, jwa.ES256())
	if err != nil {
		return ExtauthzKey{}, fmt.Errorf("dev key: %w", err)
	}
	jwks, err := keys.PublicJSON()
	if err != nil {
		return ExtauthzKey{}, err
	}
	tok, err := SignToken(keys, issuer, audience, TokenTTL)
	if err != nil {
		return ExtauthzKey{}, err
	}
	return ExtauthzKey{JWKS: jwks, Token: tok, Created: created}, nil
}

// SignToken signs a sample access token shaped like the refresher's
// (RFC 9068: typ at+jwt, kid, sid) for sub dev-user.
func SignToken(keys *keyset.Keys, issuer, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	sid := make([]byte, 8)
	rand.Read(sid)
	claims := map[string]any{
		"iss": issuer, "aud": audience, "sub": "dev-user", "name": "Dev User",
		"roles": []string{"user"}, "sid": "dev-" + hex.EncodeToString(sid), "jti": hex.EncodeToString(sid),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	if err := errors.Join(hdr.Set(jws.KeyIDKey, keys.SignerKID()), hdr.Set(jws.TypeKey, "at+jwt")); err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(keys.SignerAlg(), keys.Signer, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	return string(tok), nil
}
