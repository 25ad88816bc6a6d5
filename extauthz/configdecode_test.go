package extauthz

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Every decode problem is listed at once, each with its path; what could
// be decoded is returned for Validate.
func TestParseConfigListsEveryDecodeProblem(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(`
providers:
- issuer: https://a
  audience: [x]
  audiences: [x]
  leeway: 30
  jwks_url: https://a/jwks
  require_typ_at_jwt: "yes"
cache:
  size: lots
default_actoin: public
routes: {path: /}
`))
	var de *DecodeError
	if !errors.As(err, &de) || de.Syntax {
		t.Fatalf("error %v (%T), want a *DecodeError", err, err)
	}
	want := []string{
		`cache.size: must be an integer, not a string`,
		`unknown field "default_actoin"`,
		`providers[0]: unknown field "audience"`,
		`providers[0].leeway: a duration is a string like "30s": cannot unmarshal number into Go value of type string`,
		`providers[0].require_typ_at_jwt: must be true or false, not a string`,
		`routes: must be a list, not a mapping`,
	}
	got := strings.Split(err.Error(), "\n")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
}

func TestParseConfigPartialForValidate(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte("providers:\n- issuer: https://a\n  audiences: [x]\n  bogus: 1\nrealm: r\n"))
	if err == nil {
		t.Fatal("unknown field accepted")
	}
	if c.Realm != "r" || len(c.Providers) != 1 || c.Providers[0].Issuer != "https://a" {
		t.Errorf("partial config = %+v", c)
	}
}

func TestParseConfigDuplicatesAndSyntax(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte("realm: a\nrealm: b\nmax_token_bytes: 1\nmax_token_bytes: 2\nbogus: 1\n"))
	for _, want := range []string{`line 2: key "realm" already set in map`, `line 4: key "max_token_bytes" already set in map`, `unknown field "bogus"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	_, err = ParseConfig([]byte("providers: [\n"))
	var de *DecodeError
	if !errors.As(err, &de) || !de.Syntax || strings.Contains(err.Error(), "\n") {
		t.Errorf("syntax error = %v", err)
	}
}
