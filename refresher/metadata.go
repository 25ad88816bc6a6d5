package refresher

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metadataPath is where OIDC Discovery 1.0 §4 looks for a provider's
// metadata: the issuer plus this path.
const metadataPath = "/.well-known/openid-configuration"

// metadata is the refresher's discovery document. Its fields are the
// authorization-server metadata of RFC 8414 §2 that apply to a service with
// only a token and a revocation endpoint: there is no authorization
// endpoint, so response_types_supported (required by RFC 8414) is empty,
// and the OIDC-only fields of an ID-token issuer are left out, except
// id_token_signing_alg_values_supported, which OIDC consumers (extauthz's
// discovery among them) read for the signing algorithms: the refresher
// signs access tokens, not ID tokens, with them.
type metadata struct {
	Issuer                       string   `json:"issuer"`
	JWKSURI                      string   `json:"jwks_uri"`
	TokenEndpoint                string   `json:"token_endpoint"`
	RevocationEndpoint           string   `json:"revocation_endpoint"`
	GrantTypes                   []string `json:"grant_types_supported"`
	ResponseTypes                []string `json:"response_types_supported"`
	TokenEndpointAuthMethods     []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethod []string `json:"revocation_endpoint_auth_methods_supported"`
	SigningAlgs                  []string `json:"id_token_signing_alg_values_supported"`
	// DPoPAlgs are the proof algorithms the token endpoint accepts (RFC
	// 9449 §5.1); absent with DPoP off.
	DPoPAlgs []string `json:"dpop_signing_alg_values_supported,omitempty"`
}

// handleMetadata serves the discovery document. The URLs are absolute,
// built on the configured issuer (the refresher's external base URL); the
// algorithms are those of every published key (signer, next and previous),
// so a consumer that narrows its allowlist to them accepts every key of the
// JWKS through a key rotation.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	base := strings.TrimSuffix(s.cfg.Issuer, "/")
	doc := metadata{
		Issuer:                       s.cfg.Issuer,
		JWKSURI:                      base + "/.well-known/jwks.json",
		TokenEndpoint:                base + "/v1/token",
		RevocationEndpoint:           base + "/v1/revoke",
		GrantTypes:                   []string{"refresh_token"},
		ResponseTypes:                []string{},
		TokenEndpointAuthMethods:     []string{"none"},
		RevocationEndpointAuthMethod: []string{"none"},
		SigningAlgs:                  s.keys.algs(),
		DPoPAlgs:                     s.dpop.algs,
	}
	body, err := json.Marshal(doc)
	if err != nil { // plain strings: cannot happen
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.JWKSMaxAge/time.Second)))
	w.Write(body)
}

// algs lists the algorithms of the published keys, the signer's first,
// each once.
func (s *signingKeys) algs() []string {
	k := s.cur.Load().keys
	out := []string{k.SignerAlg().String()}
	for i := range k.Public.Len() {
		key, _ := k.Public.Key(i)
		alg, ok := key.Algorithm()
		if !ok || alg.String() == "" {
			continue
		}
		if a := alg.String(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
