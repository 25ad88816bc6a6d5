package extauthz

import "net/http"

// refuseBody answers 413 to a forward-auth request that carries a body,
// without reading it. No supported proxy sends one (nginx auth_request
// with proxy_pass_request_body off and Content-Length "", Traefik and
// Caddy send a GET without a body, Envoy's HTTP mode none unless
// with_request_body is set), and the decision never reads it: a body is a
// misconfiguration or a client holding a connection open. Connection:
// close makes net/http answer at once instead of first draining the body.
func refuseBody(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // > 0 declared, -1 chunked
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{
				"error": "request_body_not_accepted", "error_description": "forward-auth requests carry no body",
			})
			return
		}
		h(w, r)
	})
}
