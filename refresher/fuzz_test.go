package refresher_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"golang.org/x/net/http/httpguts"

	"github.com/tokengate/tokengate/internal/keyset"
)

// Whatever arrives at /v1/token, the answer is a well-formed JSON token
// response or error with a 2xx/4xx status: never a 5xx, never a panic.
func FuzzTokenEndpoint(f *testing.F) {
	seeds := []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=tgr1_AAAA"},
		{"application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=%ZZ"},
		{"application/json", `{"refresh_token":"tgr1_x","grant_type":"refresh_token"}`},
		{"application/json", `{"refresh_token":["a"]}`},
		{"application/json; charset=utf-8", `null`},
		{"multipart/form-data; boundary=x", "--x--"},
		{"", ""},
		{"text/plain;;", "x"},
		// Strict JSON (a body read one way here and another way by a proxy or
		// WAF in front): duplicates, case variants, unknown fields, at depth,
		// odd keys.
		{"application/json", `{"refresh_token":"a","refresh_token":"b"}`},
		{"application/json", `{"REFRESH_TOKEN":"tgr1_x"}`},
		{"application/json", `{"refresh_token":"tgr1_x","scope":"admin"}`},
		{"application/json", `{"refresh_token":"tgr1_x","grant_type":"refresh_token","Grant_Type":"x"}`},
		{"application/json", `{"refresh_token":"a","refresh_token":"b"}`},
		{"application/json", `{"ſcope":1,"x":{"a":[{"b":1,"B":2}]}}`},
		{"application/json", `{"refresh_token":"tgr1_x"} {"refresh_token":"y"}`},
		{"application/json", `{"":1,"":2}`},
		{"application/json", strings.Repeat("[", 5000) + strings.Repeat("]", 5000)},
		{"application/json", `{"a":` + strings.Repeat(`{"a":`, 2000) + `1` + strings.Repeat("}", 2001)},
	}
	for _, s := range seeds {
		f.Add(s.ct, s.body)
	}
	rg := newRig(f)
	f.Fuzz(func(t *testing.T, ct, body string) {
		if !httpguts.ValidHeaderFieldValue(ct) {
			t.Skip("not a sendable header value")
		}
		rg.t = t
		r := rg.do(rg.request("POST", "/v1/token", ct, body))
		if r.Status >= 500 || r.Status < 200 {
			t.Fatalf("status %d for %q %q: %s", r.Status, ct, body, r.Raw)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(r.Raw), &out); err != nil {
			t.Fatalf("answer is not JSON: %q", r.Raw)
		}
		if r.Status != http.StatusOK && out["error"] == nil {
			t.Fatalf("error answer without error code: %s", r.Raw)
		}
	})
}

// Each selectable algorithm signs tokens that verify against the JWKS,
// with its alg in the header.
func TestSigningAlgorithms(t *testing.T) {
	t.Parallel()
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA(), jwa.RS256()} {
		t.Run(alg.String(), func(t *testing.T) {
			t.Parallel()
			k, err := keyset.Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			keys, err := keyset.Assemble([]jwk.Key{k}, "")
			if err != nil {
				t.Fatal(err)
			}
			rg := newRig(t, withKeys(keys))
			hdr, _, err := rg.verify(rg.startSession("").str("access_token"))
			if err != nil || hdr["alg"] != alg.String() || hdr["typ"] != "at+jwt" {
				t.Fatalf("header %v, %v", hdr, err)
			}
		})
	}
}
