package devmode

import (
	"io"
	"net"
	"text/template"
)

// Walkthrough is what `tokengate dev` prints once both services listen.
type Walkthrough struct {
	Refresher, GRPC, HTTP, Dir, AdminTokenFile string
}

var walkthroughText = template.Must(template.New("walkthrough").Parse(`tokengate dev is running: refresher and extauthz in one process.
  refresher  {{.Refresher}}   (bolt store, signing key and admin token in {{.Dir}}/)
  extauthz   gRPC {{.GRPC}}, forward-auth {{.HTTP}}/authz/
  JWKS       {{.Refresher}}/.well-known/jwks.json

Try it (needs curl and jq):
# --- walkthrough ---
# 1. Start a session: what your login backend does after checking a password.
ADMIN=$(cat {{.AdminTokenFile}})
PAIR=$(curl -s -X POST {{.Refresher}}/v1/sessions -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d '{"sub":"alice","claims":{"name":"Alice","roles":["admin"]}}')
AT=$(echo "$PAIR" | jq -r .access_token); RT=$(echo "$PAIR" | jq -r .refresh_token)

# 2. Call your API through forward-auth (what nginx auth_request / Envoy ask extauthz): 200 with x-user-id.
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"

# 3. Refresh: the browser client does this when an API answers 401 token_expired.
PAIR=$(curl -s -X POST {{.Refresher}}/v1/token -d grant_type=refresh_token -d "refresh_token=$RT")
AT=$(echo "$PAIR" | jq -r .access_token); RT=$(echo "$PAIR" | jq -r .refresh_token)
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"

# 4. Sign out: the session is revoked, and its access token is refused (401 token_revoked).
curl -s -X POST {{.Refresher}}/v1/revoke -d "token=$RT"
curl -i {{.HTTP}}/authz/api/hello -H "Authorization: Bearer $AT"
# --- end ---

Ctrl-C stops both services.
`))

// Print writes the walkthrough to w.
func (wt Walkthrough) Print(w io.Writer) {
	_ = walkthroughText.Execute(w, wt)
}

// PrintExtauthz writes what `tokengate extauthz --dev` prints once it
// listens: the sample token and commands that use it.
func PrintExtauthz(w io.Writer, token string, grpcAddr, httpAddr net.Addr) {
	_ = extauthzText.Execute(w, struct {
		GRPC, HTTP net.Addr
		Token      string
	}{grpcAddr, httpAddr, token})
}

var extauthzText = template.Must(template.New("extauthz").Parse(`tokengate extauthz (dev) is running.
  gRPC ext_authz: {{.GRPC}}   HTTP forward-auth: http://{{.HTTP}}/authz/

A sample access token (valid 1h, sub=dev-user):

  export TOKEN={{.Token}}

Allowed (200, identity headers in the answer):
  curl -i -H "Authorization: Bearer $TOKEN" http://{{.HTTP}}/authz/hello

Denied (401 missing_token):
  curl -i http://{{.HTTP}}/authz/hello

Over gRPC (reflection is on in dev mode):
  grpcurl -plaintext -d '{"attributes":{"request":{"http":{"method":"GET","host":"app","path":"/hello","headers":{"authorization":"Bearer '"$TOKEN"'"}}}}}' {{.GRPC}} envoy.service.auth.v3.Authorization/Check
`))
