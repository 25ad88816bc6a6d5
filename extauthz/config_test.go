package extauthz

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfigStrict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"unknown top-level field", "providers: []\ndefault_actoin: public\n", `unknown field "default_actoin"`},
		{"unknown nested field", "providers:\n- issuer: x\n  audience: [a]\n", `unknown field "audience"`},
		{"duplicate field", "realm: a\nrealm: b\n", `"realm" already set`},
		{"bad duration", "providers:\n- issuer: x\n  leeway: 30\n", "duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseConfigFull(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte(`
providers:
  - name: idp
    issuer: https://auth.example.com
    audiences: [api]
    jwks_url: https://auth.example.com/jwks.json
    leeway: 10s
    max_lifetime: 1h
    require_typ_at_jwt: true
  - issuer: https://inline.example.com
    audiences: [api]
    jwks: {"keys": [{"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"}]}
token: {cookie: at, query_param: access_token, remove_authorization_header: true}
headers:
  identity: [{name: x-user-id, claim: sub}]
  encoding: rfc2047
  payload_header: x-jwt-payload
routes:
  - {path_prefix: /public/, action: public}
  - {host: "*.admin.example.com", action: required, roles_any: [admin]}
default_action: optional
cors: {allowed_origins: ["https://app.example.com"], allow_credentials: false}
cache: {size: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.Providers[0].Leeway.String() != "10s" || !c.Providers[0].RequireTypATJWT || *c.CORS.AllowCredentials {
		t.Fatalf("decoded %+v", c)
	}
	if !strings.Contains(string(c.Providers[1].JWKS), `"keys"`) {
		t.Fatalf("inline jwks %s", c.Providers[1].JWKS)
	}
}

// Validate reports every problem at once, each with its path.
func TestValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte(`
providers:
  - issuer: ""
    audiences: []
    algorithms: [none, HS256, XS999]
    leeway: 10m
  - issuer: https://a
    audiences: [x]
    jwks_url: ftp://a/jwks
    jwks_file: /k.json
    refresh_min_interval: 10m
    refresh_max_interval: 1m
    kid_refetch_min_gap: -1s
    kid_refetch_wait: 20s
  - issuer: https://a
    audiences: [x]
    hmac_secret: short
    algorithms: [ES256]
headers:
  identity:
    - {name: host, claim: sub}
    - {name: "bad name", claim: sub}
    - {name: x-a, claim: "a..b"}
    - {name: X-A, claim: name}
  encoding: utf8
routes:
  - {path: api, action: maybe}
  - {path: /a, path_prefix: /b, action: public, roles_any: [x]}
  - {host: "a.*.com", methods: [get], action: required}
default_action: nope
cors: {allowed_origins: ["app.example.com"]}
max_token_bytes: -1
realm: 'a"b'
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	got := strings.Split(err.Error(), "\n")
	want := []string{
		`providers[0].issuer: is required`,
		`providers[0].audiences: at least one audience is required`,
		`providers[0]: one of jwks_url, jwks_file, jwks or hmac_secret(_file) is required`,
		`providers[0].algorithms[0]: none is never accepted`,
		`providers[0].algorithms[1]: HS256 needs hmac_secret or hmac_secret_file`,
		`providers[0].algorithms[2]: unsupported algorithm "XS999" (use ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA, HS256)`,
		`providers[0].leeway: must be between 0 and 5m`,
		`providers[1]: set only one of jwks_url, jwks_file and jwks`,
		`providers[1].jwks_url: must be an http or https URL, not "ftp://a/jwks"`,
		`providers[1].refresh_max_interval: must not be below refresh_min_interval`,
		`providers[1].kid_refetch_min_gap: must not be negative`,
		`providers[1].kid_refetch_wait: must be between 0 and fetch_timeout (10s)`,
		`providers[2].hmac_secret: must be at least 32 bytes for HS256`,
		`providers[2].algorithms: an HMAC secret is configured but HS256 is not allowed`,
		`providers[2].issuer: duplicates providers[1].issuer`,
		`max_token_bytes: must be positive`,
		`headers.identity[0].name: "host" is reserved: it routes the request`,
		`headers.identity[1].name: "bad name" is not a valid header name`,
		`headers.identity[2].claim: "a..b" has an empty segment`,
		`headers.identity[3].name: header "X-A" is also set by headers.identity[2].name`,
		`headers.encoding: must be percent or rfc2047, not "utf8"`,
		`default_action: must be public, optional or required, not "nope"`,
		`routes[0].action: must be public, optional or required, not "maybe"`,
		`routes[0].path: must start with /`,
		`routes[1]: set only one of path and path_prefix`,
		`routes[1]: roles_any and scopes_all need action: required`,
		`routes[2].host: "a.*.com" is not a host or *.domain`,
		`routes[2].methods[0]: "get" is not an upper-case method`,
		`cors.allowed_origins[0]: "app.example.com" is not an origin like https://app.example.com`,
		`realm: must not contain quotes, backslashes or line breaks`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("problems (-want +got):\n%s", diff)
	}
}

func TestValidateMinimalAndEmpty(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate(); err == nil || err.Error() != "providers: at least one provider is required" {
		t.Fatalf("empty config: %v", err)
	}
	k := newTestKey(t, "ES256", "es-1")
	if err := baseConfig(t, k).Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}

// Every config field is documented in docs/extauthz.md, and the complete
// example there decodes strictly and validates.
func TestConfigDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/extauthz.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ == reflect.TypeOf(Duration{}) {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(string(doc), "`"+name+"`") && !strings.Contains(string(doc), "`"+name+"[]`") {
				t.Errorf("config field %s.%s (%q) is not documented", typ.Name(), f.Name, name)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeOf(Config{}))

	_, rest, ok := strings.Cut(string(doc), "## Configuration file")
	if !ok {
		t.Fatal("no configuration section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	example, _, _ := strings.Cut(rest, "```")
	c, err := ParseConfig([]byte(example))
	if err != nil {
		t.Fatalf("the documented example does not decode: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the documented example does not validate: %v", err)
	}
}
