package refresher_test

import (
	"net/http"
	"strings"
	"testing"
)

// Every JSON body the refresher reads is strict: a key given twice, two keys
// that differ only in case (at any depth, claims included), a field name in
// another case than documented, and unknown fields are refused with a 400
// naming the field — before anything is written. Go's decoder would
// otherwise take the last duplicate and match names case-insensitively, so
// {"sub":"alice","sub":"admin"} or {"SUB":"admin"} signed in "admin".
func TestStrictJSONBodies(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	sid := rg.startSession(`{"sub":"alice","claims":{"roles":["viewer"]}}`).str("session_id")
	auth := []string{"Authorization", "Bearer " + adminToken}
	js := "application/json"
	tests := []struct {
		name, method, path, body string
		header                   []string
		descPrefix               string
	}{
		{"sessions: duplicate sub", "POST", "/v1/sessions", `{"sub":"alice","sub":"admin"}`, auth, "sub: "},
		{"sessions: duplicate sub, escaped spelling", "POST", "/v1/sessions", `{"sub":"alice","s\u0075b":"admin"}`, auth, "sub: "},
		{"sessions: SUB", "POST", "/v1/sessions", `{"SUB":"admin"}`, auth, "SUB: "},
		{"sessions: Sub after sub", "POST", "/v1/sessions", `{"sub":"alice","Sub":"admin"}`, auth, "Sub: "},
		{"sessions: Unicode fold of sub (long s)", "POST", "/v1/sessions", `{"ſub":"admin"}`, auth, "ſub: "},
		{"sessions: Claims", "POST", "/v1/sessions", `{"sub":"a","Claims":{"roles":["admin"]}}`, auth, "Claims: "},
		{"sessions: IDLE_TTL", "POST", "/v1/sessions", `{"sub":"a","IDLE_TTL":"1m"}`, auth, "IDLE_TTL: "},
		{"sessions: duplicate claims object", "POST", "/v1/sessions", `{"sub":"a","claims":{},"claims":{"roles":["admin"]}}`, auth, "claims: "},
		{"sessions: duplicate claim", "POST", "/v1/sessions", `{"sub":"a","claims":{"roles":["viewer"],"roles":["admin"]}}`, auth, "claims.roles: "},
		{"sessions: case-variant claims", "POST", "/v1/sessions", `{"sub":"a","claims":{"role":"viewer","Role":"admin"}}`, auth, "claims.Role: "},
		{"sessions: duplicate deep in claims", "POST", "/v1/sessions", `{"sub":"a","claims":{"org":{"teams":[{"id":1},{"id":2,"id":3}]}}}`, auth, "claims.org.teams[1].id: "},
		{"sessions: unknown field", "POST", "/v1/sessions", `{"sub":"a","admin":true}`, auth, "admin: unknown field"},
		{"patch: duplicate claims", "PATCH", "/v1/sessions/" + sid, `{"claims":{"roles":["admin"]},"claims":{}}`, auth, "claims: "},
		{"patch: CLAIMS", "PATCH", "/v1/sessions/" + sid, `{"CLAIMS":{"roles":["admin"]}}`, auth, "CLAIMS: "},
		{"patch: duplicate claim", "PATCH", "/v1/sessions/" + sid, `{"claims":{"roles":["viewer"],"roles":["admin"]}}`, auth, "claims.roles: "},
		{"token: duplicate refresh_token", "POST", "/v1/token", `{"refresh_token":"a","refresh_token":"b"}`, nil, "refresh_token: "},
		{"token: REFRESH_TOKEN", "POST", "/v1/token", `{"REFRESH_TOKEN":"a"}`, nil, "REFRESH_TOKEN: "},
		{"token: unknown field", "POST", "/v1/token", `{"refresh_token":"a","scope":"admin"}`, nil, "scope: unknown field"},
		{"token: duplicate grant_type", "POST", "/v1/token", `{"grant_type":"refresh_token","grant_type":"x","refresh_token":"a"}`, nil, "grant_type: "},
		{"revoke: duplicate token", "POST", "/v1/revoke", `{"token":"a","token":"b"}`, nil, "token: "},
		{"revoke: Token", "POST", "/v1/revoke", `{"Token":"a"}`, nil, "Token: "},
		{"revoke: unknown field", "POST", "/v1/revoke", `{"token":"a","extra":1}`, nil, "extra: unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rg.do(rg.request(tc.method, tc.path, js, tc.body, tc.header...))
			if r.Status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.HasPrefix(r.str("error_description"), tc.descPrefix) {
				t.Errorf("%s = %d %s %q; want 400 invalid_request %q…", tc.body, r.Status, r.str("error"), r.str("error_description"), tc.descPrefix)
			}
		})
	}
	// After every parallel case above has finished: nothing was written.
	t.Cleanup(func() {
		if n := rg.counter("tokengate_refresher_sessions_created_total"); n != 1 {
			t.Errorf("sessions created = %v, want only the first", n)
		}
		if got := rg.session(sid); string(got.Claims) != `{"roles":["viewer"]}` {
			t.Errorf("claims after refused patches = %s", got.Claims)
		}
	})
}

// Keys that merely look alike are still distinct and accepted: the check is
// per object, and only exact or case-folded equality collides.
func TestStrictJSONAcceptsDistinctKeys(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	r := rg.startSession(`{"sub":"alice","claims":{"name":"A","org":{"name":"B"},"list":[{"id":1},{"id":2}],"n":"1","n_":"2"}}`)
	_, claims, err := rg.verify(r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if claims["name"] != "A" || claims["n_"] != "2" {
		t.Errorf("claims = %v", claims)
	}
}
