package refresher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// CookieName is the refresh-token cookie of the cookie transport.
const CookieName = "tokengate_refresh"

// The cookie is scoped to the token endpoint (Config.CookiePath, and the
// revocation endpoint below it), so no other request carries it.
func (s *Server) refreshCookie(token string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: token, Path: s.cfg.CookiePath, Expires: expires.UTC(),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

func (s *Server) clearCookie() *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: "", Path: s.cfg.CookiePath, MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

func tooLarge() *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: "invalid_request", Reason: "body_too_large",
		Description: "request body too large"}
}

// readBody reads the whole (size-limited) body.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge()
	} else if err != nil {
		return nil, invalidRequest("body: %v", err)
	}
	return b, nil
}

// mediaType is the request's Content-Type without parameters ("" if none).
func mediaType(r *http.Request) (string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", invalidRequest("Content-Type: cannot parse %q", ct)
	}
	return mt, nil
}

// decodeStrict decodes a JSON object with exactly the given field names
// into v, refusing unknown fields, duplicate and case-variant keys at any
// depth (checkJSONKeys) and trailing data, with messages naming the field.
func decodeStrict(body []byte, v any, fields ...string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalidRequest("body: a JSON object is required")
	}
	if err := checkJSONKeys(body, fields); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return invalidRequest("body: trailing data after the JSON object")
	}
	return nil
}

func jsonError(err error) *Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return invalidRequest("body: must be a JSON object")
	case errors.As(err, &typeErr):
		return invalidRequest("%s: must be %s", typeErr.Field, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return invalidRequest("body: malformed JSON at byte %d", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return invalidRequest("%s: unknown field", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
	}
	return invalidRequest("body: %v", err)
}

// duration accepts a Go duration string ("12h") or whole seconds (3600).
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration: %q", s)
		}
		*d = duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("must be a duration string like \"12h\" or whole seconds")
	}
	*d = duration(time.Duration(n) * time.Second)
	return nil
}

func decodeSessionRequest(r *http.Request) (SessionRequest, error) {
	body, err := readBody(r)
	if err != nil {
		return SessionRequest{}, err
	}
	var in struct {
		Sub      string          `json:"sub"`
		Claims   json.RawMessage `json:"claims"`
		IdleTTL  *duration       `json:"idle_ttl"`
		DPoPJKT  string          `json:"dpop_jkt"`
		DeviceID string          `json:"device_id"`
		ClientIP string          `json:"client_ip"`
	}
	if err := decodeStrict(body, &in, "sub", "claims", "idle_ttl", "dpop_jkt", "device_id", "client_ip"); err != nil {
		if e := asError(err); strings.Contains(e.Description, "duration") || strings.Contains(e.Description, "whole seconds") {
			return SessionRequest{}, invalidRequest("idle_ttl: must be a duration string like \"12h\" or whole seconds")
		}
		return SessionRequest{}, err
	}
	req := SessionRequest{Subject: in.Sub, Claims: in.Claims, JKT: in.DPoPJKT, DeviceID: in.DeviceID, ClientIP: in.ClientIP}
	if in.DPoPJKT != "" && !validJKT(in.DPoPJKT) {
		return SessionRequest{}, invalidRequest("dpop_jkt: must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)")
	}
	if len(in.DeviceID) > maxDeviceID {
		return SessionRequest{}, invalidRequest("device_id: longer than %d bytes", maxDeviceID)
	}
	if in.ClientIP != "" {
		ip, err := netip.ParseAddr(in.ClientIP)
		if err != nil || ip.Zone() != "" {
			return SessionRequest{}, invalidRequest("client_ip: not an IP address: %q", in.ClientIP)
		}
		req.ClientIP = ip.Unmap().String()
	}
	if in.IdleTTL != nil {
		req.IdleTTL = time.Duration(*in.IdleTTL)
		if req.IdleTTL < time.Second {
			return SessionRequest{}, invalidRequest("idle_ttl: must be at least 1s")
		}
	}
	return req, nil
}

// maxDeviceID bounds the device identifier a sign-in may give.
const maxDeviceID = 256

func decodePatchRequest(r *http.Request) (json.RawMessage, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var in struct {
		Claims json.RawMessage `json:"claims"`
	}
	if err := decodeStrict(body, &in, "claims"); err != nil {
		return nil, err
	}
	if in.Claims == nil {
		return nil, invalidRequest("claims: required (a JSON object; {} clears them)")
	}
	return in.Claims, nil
}

// bodyFields reads the named fields from a form or JSON body. An empty body
// without a Content-Type yields no fields (a cookie-only request). A JSON
// body is strict (only the named fields, each once, spelled exactly); a form
// may carry other parameters, which are ignored (RFC 6749 §3.2), but each
// named one at most once.
func bodyFields(r *http.Request, names ...string) (map[string]string, error) {
	mt, err := mediaType(r)
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	switch {
	case mt == "application/x-www-form-urlencoded":
		vals, err := parseForm(body)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if v := vals[n]; len(v) > 1 {
				return nil, invalidRequest("%s: given more than once", n)
			} else if len(v) == 1 {
				out[n] = v[0]
			}
		}
	case mt == "application/json":
		if err := checkJSONKeys(body, names); err != nil {
			return nil, err
		}
		var in map[string]any
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, jsonError(err)
		}
		if in == nil {
			return nil, invalidRequest("body: a JSON object is required")
		}
		for _, n := range names {
			switch v := in[n].(type) {
			case nil:
			case string:
				out[n] = v
			default:
				return nil, invalidRequest("%s: must be a string", n)
			}
		}
	case mt == "" && len(bytes.TrimSpace(body)) == 0:
	default:
		return nil, invalidRequest("Content-Type: must be application/x-www-form-urlencoded or application/json, got %q", mt)
	}
	return out, nil
}

func (s *Server) decodeTokenRequest(r *http.Request) (token string, fromCookie bool, err error) {
	f, err := bodyFields(r, "grant_type", "refresh_token")
	if err != nil {
		return "", false, err
	}
	mt, _ := mediaType(r)
	if gt, ok := f["grant_type"]; ok && gt != "refresh_token" {
		return "", false, unsupportedGrantType(gt)
	} else if !ok && mt == "application/x-www-form-urlencoded" {
		// RFC 6749 §6 makes grant_type required in the form; JSON and
		// cookie-only requests may leave it out.
		return "", false, invalidRequest("grant_type: required (refresh_token)")
	}
	return s.pickToken(r, f["refresh_token"], "refresh_token")
}

func (s *Server) decodeRevokeRequest(r *http.Request) (token string, fromCookie bool, err error) {
	f, err := bodyFields(r, "token", "token_type_hint")
	if err != nil {
		return "", false, err
	}
	return s.pickToken(r, f["token"], "token")
}

// pickToken takes the body's token (body transport) or the cookie's
// (cookie transport); with both allowed, the body wins. A cookie is used
// only by a request from an allowed page (cors.checkCookieRequest).
func (s *Server) pickToken(r *http.Request, fromBody, field string) (string, bool, error) {
	t := s.cfg.RefreshTokenTransport
	if fromBody != "" && t.body() {
		return fromBody, false, nil
	}
	if t.cookie() {
		if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
			if err := s.cors.checkCookieRequest(r); err != nil {
				return "", false, err
			}
			return c.Value, true, nil
		}
	}
	if fromBody != "" {
		return "", false, invalidRequest("%s: the body transport is disabled; the token travels in the %s cookie", field, CookieName)
	}
	if t.cookie() && !t.body() {
		return "", false, invalidRequest("%s: no %s cookie", field, CookieName)
	}
	return "", false, invalidRequest("%s: required", field)
}

// client is who made the request: the TCP peer, or the address a trusted
// proxy wrote in the configured header.
func (s *Server) client(r *http.Request) Client {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	switch strings.ToLower(s.cfg.ClientIPHeader) {
	case "x-forwarded-for":
		if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			if last := strings.TrimSpace(parts[len(parts)-1]); last != "" {
				ip = last
			}
		}
	case "x-real-ip":
		if v := strings.TrimSpace(r.Header.Get("X-Real-IP")); v != "" {
			ip = v
		}
	}
	return Client{IP: ip, UserAgent: r.UserAgent()}
}

func parseForm(body []byte) (map[string][]string, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("body: malformed form encoding")
	}
	return vals, nil
}
