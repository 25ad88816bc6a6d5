package refresher

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestSealRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	parent, parentHash := newRefreshToken()
	other, otherHash := newRefreshToken()
	child, _ := newRefreshToken()
	p := issuedPair{AccessToken: "header.payload.sig", RefreshToken: child, SessionID: "sid1",
		AccessExpiresAt: time.Unix(1000, 0).UTC(), RefreshExpiresAt: time.Unix(2000, 0).UTC(), JTI: "j"}
	sealed, err := seal(parent, parentHash, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{child, strings.TrimPrefix(child, refreshPrefix), "header.payload.sig", "sid1"} {
		if bytes.Contains(sealed, []byte(plain)) {
			t.Errorf("sealed pair contains %q in clear", plain)
		}
	}
	got, err := unseal(parent, parentHash, sealed)
	if err != nil || got != p {
		t.Fatalf("unseal = %+v, %v; want %+v", got, err, p)
	}
	if _, err := unseal(other, parentHash, sealed); err == nil {
		t.Error("unsealed with another token")
	}
	if _, err := unseal(parent, otherHash, sealed); err == nil {
		t.Error("unsealed under another slot's hash")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := unseal(parent, parentHash, tampered); err == nil {
		t.Error("unsealed a tampered pair")
	}
}

func TestRefreshTokenFormat(t *testing.T) {
	t.Parallel()
	tok, hash := newRefreshToken()
	if !strings.HasPrefix(tok, "tgr1_") || len(tok) != len("tgr1_")+43 || !wellFormed(tok) {
		t.Errorf("token %q: want tgr1_ + 43 base64url characters (256 bits)", tok)
	}
	if len(hash) != 64 || hash == tok {
		t.Errorf("hash %q is not hex SHA-256", hash)
	}
	tok2, _ := newRefreshToken()
	if tok2 == tok {
		t.Error("two tokens are equal")
	}
	for _, bad := range []string{"", "tgr1_", "tgr0_" + tok[5:], tok + "A", tok[:len(tok)-1] + "*"} {
		if wellFormed(bad) {
			t.Errorf("wellFormed(%q) = true", bad)
		}
	}
}
