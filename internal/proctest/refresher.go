package proctest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// TokenResponse is a refresher answer as process tests read it: a token
// pair, or an OAuth error.
type TokenResponse struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int    `json:"refresh_expires_in"`
	SessionID        string `json:"session_id"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// Answer is one HTTP answer of the refresher, decoded.
type Answer struct {
	Status     int
	RetryAfter string
	Body       TokenResponse
	// Err is a transport error (the answer was lost) or a JSON body that
	// does not decode.
	Err error
}

func (a Answer) String() string {
	if a.Err != nil {
		return "lost: " + a.Err.Error()
	}
	return fmt.Sprintf("%d %s %s", a.Status, a.Body.Error, a.Body.ErrorDescription)
}

// Do sends req with c and decodes the answer; a JSON body (by its
// Content-Type) fills Body.
func Do(c *http.Client, req *http.Request) Answer {
	resp, err := c.Do(req)
	if err != nil {
		return Answer{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	a := Answer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Err: err}
	if err == nil && len(body) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if jerr := json.Unmarshal(body, &a.Body); jerr != nil {
			a.Err = fmt.Errorf("status %d, body %.200q: %w", resp.StatusCode, body, jerr)
		}
	}
	return a
}
