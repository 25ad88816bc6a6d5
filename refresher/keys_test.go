package refresher_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokengate/tokengate/internal/fakeclock"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/tokengate/tokengate/internal/keyset"
	"github.com/tokengate/tokengate/refresher/store/memstore"
)

// writeSet writes private keys as a JWK set file, as an operator would.
func writeSet(t *testing.T, keys ...jwk.Key) string {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func kidOf(k jwk.Key) string { kid, _ := k.KeyID(); return kid }

// The documented rotation procedure (docs/refresher.md), step by step, with
// the tokens of each phase checked against the JWKS the refresher serves:
//  1. publish the next key (old key signs, both published);
//  2. switch the signer (new key signs, old still published);
//  3. after the access TTL, retire the old key.
func TestKeyRotationProcedure(t *testing.T) {
	t.Parallel()
	oldKey, err := keyset.Generate(jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := keyset.Generate(jwa.EdDSA())
	if err != nil {
		t.Fatal(err)
	}
	load := func(path, active string) *keyset.Keys {
		k, err := keyset.Load(path, active)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	st := memstore.New()
	clock := fakeclock.New()
	serve := func(k *keyset.Keys) *rig { return newRig(t, withStore(st), withKeys(k), withClock(clock)) }

	// Start: only the old key.
	rg := serve(load(writeSet(t, oldKey), ""))
	s := rg.startSession("")
	tokenOld := s.str("access_token")

	// 1. Publish the next key; the old one still signs.
	rg = serve(load(writeSet(t, oldKey, newKey), kidOf(oldKey)))
	next := rg.refresh(s.str("refresh_token"))
	hdr, _, err := rg.verify(next.str("access_token"))
	if err != nil || hdr["kid"] != kidOf(oldKey) {
		t.Fatalf("phase 1: kid %v, %v; want the old key", hdr["kid"], err)
	}
	if _, _, err := rg.verify(tokenOld); err != nil {
		t.Fatalf("phase 1: old token: %v", err)
	}

	// 2. Switch the signer; old tokens still verify.
	rg = serve(load(writeSet(t, oldKey, newKey), kidOf(newKey)))
	next2 := rg.refresh(next.str("refresh_token"))
	hdr, _, err = rg.verify(next2.str("access_token"))
	if err != nil || hdr["kid"] != kidOf(newKey) || hdr["alg"] != "EdDSA" {
		t.Fatalf("phase 2: header %v, %v; want the new EdDSA key", hdr, err)
	}
	if _, _, err := rg.verify(next.str("access_token")); err != nil {
		t.Fatalf("phase 2: token signed by the old key no longer verifies: %v", err)
	}

	// 3. Retire the old key (after the access TTL): only the new key is
	// published, and a token of the old key no longer verifies.
	newPub, _ := jwk.PublicKeyOf(newKey)
	rg = serve(load(writeSet(t, newKey), ""))
	if _, _, err := rg.verify(next2.str("access_token")); err != nil {
		t.Fatalf("phase 3: %v", err)
	}
	if _, _, err := rg.verify(next.str("access_token")); err == nil {
		t.Fatal("phase 3: a token of the retired key still verifies")
	}
	set, _ := jwk.Parse([]byte(rg.do(rg.request("GET", "/.well-known/jwks.json", "", "")).Raw))
	if set.Len() != 1 {
		t.Errorf("phase 3: JWKS has %d keys", set.Len())
	}
	if k, _ := set.Key(0); kidOf(k) != kidOf(newPub) {
		t.Error("phase 3: JWKS does not hold the new key")
	}
}

// SetKeys switches the signer of a running server (no restart).
func TestSetKeys(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	s := rg.startSession("")
	before, _, _ := rg.verify(s.str("access_token"))
	next := generateKeys(t)
	if err := rg.srv.SetKeys(next); err != nil {
		t.Fatal(err)
	}
	after, _, err := rg.verify(rg.refresh(s.str("refresh_token")).str("access_token"))
	if err != nil || after["kid"] != next.SignerKID() || after["kid"] == before["kid"] {
		t.Fatalf("after SetKeys: kid %v (before %v), %v", after["kid"], before["kid"], err)
	}
}
