package dpop_test

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/dpop"
	"github.com/tokengate/tokengate/internal/dpop/dpoptest"
	"github.com/tokengate/tokengate/internal/fakeclock"
)

const (
	testURL    = "https://api.example.com/v1/things"
	testMethod = "GET"
	testToken  = "access-token-value"
)

// keys are generated once per test binary: RSA generation is slow.
var (
	keysOnce sync.Once
	keys     map[string]*dpoptest.Key
)

func testKeys(t *testing.T) map[string]*dpoptest.Key {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[string]*dpoptest.Key{}
		for _, alg := range []string{"ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA"} {
			keys[alg] = dpoptest.NewKey(t, alg)
		}
		keys["ES256-other"] = dpoptest.NewKey(t, "ES256")
		keys["RS256-1024"] = dpoptest.NewRSAKey(t, "RS256", 1024)
	})
	return keys
}

func newVerifier(t *testing.T, clock *fakeclock.Clock, edit func(*dpop.Options)) *dpop.Verifier {
	t.Helper()
	o := dpop.Options{Replay: dpop.NewReplayCache(0), Now: clock.Now}
	if edit != nil {
		edit(&o)
	}
	v, err := dpop.NewVerifier(o)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// segments splits a proof into its three parts.
func segments(t *testing.T, proof string) [3]string {
	t.Helper()
	p := strings.Split(proof, ".")
	if len(p) != 3 {
		t.Fatalf("proof has %d segments", len(p))
	}
	return [3]string{p[0], p[1], p[2]}
}

// checkErr fails unless err is a *dpop.Error with code whose description
// contains desc (code "" wants no error).
func checkErr(t *testing.T, err error, code, desc string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("Verify: %v, want success", err)
		}
		return
	}
	var de *dpop.Error
	if !errors.As(err, &de) {
		t.Fatalf("Verify error = %v (%T), want *dpop.Error %s", err, err, code)
	}
	if de.Code != code || !strings.Contains(de.Description, desc) {
		t.Fatalf("Verify error = %q / %q, want %q containing %q", de.Code, de.Description, code, desc)
	}
}

func TestVerifyRules(t *testing.T) {
	t.Parallel()
	ks := testKeys(t)
	es := ks["ES256"]
	now := fakeclock.Start
	at := dpoptest.WithIAT(now)
	setHeader := func(name string, v any) dpoptest.Opt {
		return dpoptest.Edit(func(s *dpoptest.Spec) { s.Header[name] = v })
	}
	delHeader := func(name string) dpoptest.Opt {
		return dpoptest.Edit(func(s *dpoptest.Spec) { delete(s.Header, name) })
	}
	setClaim := func(name string, v any) dpoptest.Opt {
		return dpoptest.Edit(func(s *dpoptest.Spec) { s.Claims[name] = v })
	}
	delClaim := func(name string) dpoptest.Opt {
		return dpoptest.Edit(func(s *dpoptest.Spec) { delete(s.Claims, name) })
	}
	jwkWith := func(name string, v any) dpoptest.Opt {
		return dpoptest.Edit(func(s *dpoptest.Spec) { s.Header["jwk"].(map[string]any)[name] = v })
	}
	valid := func() string { return es.Proof(testMethod, testURL, at) }
	// raw signs hand-written JSON (what a map cannot express).
	raw := func(header, claims string) string { return es.SignRaw([]byte(header), []byte(claims)) }
	jwkJSON := func(k *dpoptest.Key) string {
		var b strings.Builder
		b.WriteString("{")
		first := true
		for _, n := range []string{"kty", "crv", "x", "y", "n", "e"} {
			if v, ok := k.JWK()[n]; ok {
				if !first {
					b.WriteString(",")
				}
				first = false
				b.WriteString(`"` + n + `":"` + v.(string) + `"`)
			}
		}
		b.WriteString("}")
		return b.String()
	}
	hdr := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + jwkJSON(es) + `}`
	claimsJSON := func(extra string) string {
		return `{"jti":"j1","htm":"GET","htu":"` + testURL + `","iat":` + itoa(now.Unix()) + extra + `}`
	}
	flip := func(p string) string {
		s := segments(t, p)
		sig, _ := base64.RawURLEncoding.DecodeString(s[2])
		sig[len(sig)/2] ^= 1
		return s[0] + "." + s[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	req := dpop.Request{Method: testMethod, URL: testURL}
	withURL := func(u string) dpop.Request { return dpop.Request{Method: testMethod, URL: u} }

	cases := []struct {
		name  string
		proof func() string
		req   dpop.Request
		code  string
		desc  string
	}{
		{"valid", valid, req, "", ""},
		{"valid hand-written", func() string { return raw(hdr, claimsJSON("")) }, req, "", ""},
		{"valid escaped member names", func() string {
			return raw(`{"t\u0079p":"dpop+jwt","alg":"ES256","jwk":`+jwkJSON(es)+`}`, claimsJSON(""))
		}, req, "", ""},
		{"empty", func() string { return "" }, req, dpop.CodeInvalidProof, "no DPoP proof"},
		{"too long", func() string { return valid() + strings.Repeat("A", 9000) }, req, dpop.CodeInvalidProof, "longer than 8192"},

		// typ and alg
		{"wrong typ", func() string { return es.Proof(testMethod, testURL, at, setHeader("typ", "JWT")) }, req, dpop.CodeInvalidProof, "typ is not dpop+jwt"},
		{"typ case", func() string { return es.Proof(testMethod, testURL, at, setHeader("typ", "DPoP+jwt")) }, req, dpop.CodeInvalidProof, "typ is not dpop+jwt"},
		{"missing typ", func() string { return es.Proof(testMethod, testURL, at, delHeader("typ")) }, req, dpop.CodeInvalidProof, "typ is missing"},
		{"typ not string", func() string { return es.Proof(testMethod, testURL, at, setHeader("typ", 1)) }, req, dpop.CodeInvalidProof, "typ is not a string"},
		{"alg none", func() string { return es.Proof(testMethod, testURL, at, setHeader("alg", "none")) }, req, dpop.CodeInvalidProof, "alg is not allowed"},
		{"alg HS256", func() string { return es.Proof(testMethod, testURL, at, setHeader("alg", "HS256")) }, req, dpop.CodeInvalidProof, "alg is not allowed"},
		{"alg not allowlisted", func() string { return es.Proof(testMethod, testURL, at, setHeader("alg", "ES256K")) }, req, dpop.CodeInvalidProof, "alg is not allowed"},
		{"alg missing", func() string { return es.Proof(testMethod, testURL, at, delHeader("alg")) }, req, dpop.CodeInvalidProof, "alg is missing"},
		{"crit", func() string { return es.Proof(testMethod, testURL, at, setHeader("crit", []string{"exp"})) }, req, dpop.CodeInvalidProof, "crit is not supported"},

		// jwk
		{"jwk missing", func() string { return es.Proof(testMethod, testURL, at, delHeader("jwk")) }, req, dpop.CodeInvalidProof, "jwk is missing"},
		{"jwk not object", func() string { return es.Proof(testMethod, testURL, at, setHeader("jwk", "key")) }, req, dpop.CodeInvalidProof, "jwk is not an object"},
		{"ES256 with a P-384 key", func() string { return ks["ES384"].Proof(testMethod, testURL, at, setHeader("alg", "ES256")) }, req, dpop.CodeInvalidProof, "crv does not match alg ES256"},
		{"ES256 with an RSA key", func() string { return ks["RS256"].Proof(testMethod, testURL, at, setHeader("alg", "ES256")) }, req, dpop.CodeInvalidProof, "kty does not match alg ES256"},
		{"RS256 with an EC key", func() string { return es.Proof(testMethod, testURL, at, setHeader("alg", "RS256")) }, req, dpop.CodeInvalidProof, "kty does not match alg RS256"},
		{"EdDSA with an EC key", func() string { return es.Proof(testMethod, testURL, at, setHeader("alg", "EdDSA")) }, req, dpop.CodeInvalidProof, "kty does not match alg EdDSA"},
		{"private d", func() string { return es.Proof(testMethod, testURL, at, jwkWith("d", b64("secret"))) }, req, dpop.CodeInvalidProof, "private key members"},
		{"private k (symmetric)", func() string { return es.Proof(testMethod, testURL, at, jwkWith("k", b64("secret"))) }, req, dpop.CodeInvalidProof, "private key members"},
		{"private p of RSA", func() string { return ks["RS256"].Proof(testMethod, testURL, at, jwkWith("p", "AQAB")) }, req, dpop.CodeInvalidProof, "private key members"},
		{"private oth", func() string { return ks["RS256"].Proof(testMethod, testURL, at, jwkWith("oth", []any{})) }, req, dpop.CodeInvalidProof, "private key members"},
		{"RSA 1024", func() string { return ks["RS256-1024"].Proof(testMethod, testURL, at) }, req, dpop.CodeInvalidProof, "between 2048 and 8192 bits"},
		{"RSA e even", func() string { return ks["RS256"].Proof(testMethod, testURL, at, jwkWith("e", b64("\x01\x00\x00"))) }, req, dpop.CodeInvalidProof, "jwk e"},
		{"RSA n leading zero", func() string {
			n, _ := base64.RawURLEncoding.DecodeString(ks["RS256"].JWK()["n"].(string))
			return ks["RS256"].Proof(testMethod, testURL, at, jwkWith("n", base64.RawURLEncoding.EncodeToString(append([]byte{0}, n...))))
		}, req, dpop.CodeInvalidProof, "jwk n"},
		{"EC x short", func() string { return es.Proof(testMethod, testURL, at, jwkWith("x", b64("short"))) }, req, dpop.CodeInvalidProof, "jwk x is not a P-256 coordinate"},
		{"EC x padded", func() string { return es.Proof(testMethod, testURL, at, jwkWith("x", es.JWK()["x"].(string)+"=")) }, req, dpop.CodeInvalidProof, "jwk x"},
		{"EC point off the curve", func() string { return es.Proof(testMethod, testURL, at, jwkWith("y", es.JWK()["x"])) }, req, dpop.CodeInvalidProof, "not a point on P-256"},
		{"EC crv missing", func() string {
			return es.Proof(testMethod, testURL, at, dpoptest.Edit(func(s *dpoptest.Spec) { delete(s.Header["jwk"].(map[string]any), "crv") }))
		}, req, dpop.CodeInvalidProof, "crv does not match"},
		{"OKP wrong curve", func() string { return ks["EdDSA"].Proof(testMethod, testURL, at, jwkWith("crv", "X25519")) }, req, dpop.CodeInvalidProof, "crv is not Ed25519"},
		{"jwk member not string", func() string { return es.Proof(testMethod, testURL, at, jwkWith("x", 5)) }, req, dpop.CodeInvalidProof, "jwk member x is not a string"},

		// compact form and base64url
		{"two segments", func() string { s := segments(t, valid()); return s[0] + "." + s[1] }, req, dpop.CodeInvalidProof, "three segments"},
		{"one segment", func() string { return segments(t, valid())[0] }, req, dpop.CodeInvalidProof, "three segments"},
		{"four segments", func() string { return valid() + ".AAAA" }, req, dpop.CodeInvalidProof, "three segments"},
		{"empty signature", func() string { s := segments(t, valid()); return s[0] + "." + s[1] + "." }, req, dpop.CodeInvalidProof, "not base64url"},
		{"two joined proofs", func() string { return valid() + "," + valid() }, req, dpop.CodeInvalidProof, "three segments"},
		{"comma", func() string { s := segments(t, valid()); return s[0] + "," + "." + s[1] + "." + s[2] }, req, dpop.CodeInvalidProof, "not base64url"},
		{"padding", func() string { return valid() + "==" }, req, dpop.CodeInvalidProof, "not base64url"},
		{"standard alphabet", func() string {
			s := segments(t, valid())
			return s[0] + "." + s[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(s[2]) + "+/"
		}, req, dpop.CodeInvalidProof, "not base64url"},
		{"space", func() string { s := segments(t, valid()); return " " + s[0] + "." + s[1] + "." + s[2] }, req, dpop.CodeInvalidProof, "not base64url"},
		{"newline inside", func() string { s := segments(t, valid()); return s[0][:4] + "\n" + s[0][4:] + "." + s[1] + "." + s[2] }, req, dpop.CodeInvalidProof, "not base64url"},
		{"non-canonical trailing bits", func() string {
			// 64 signature bytes are 86 characters: the last carries 4
			// unused bits, which must be zero.
			s := segments(t, valid())
			last := s[2][len(s[2])-1]
			alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			i := strings.IndexByte(alphabet, last)
			return s[0] + "." + s[1] + "." + s[2][:len(s[2])-1] + string(alphabet[i|1])
		}, req, dpop.CodeInvalidProof, "not base64url"},
		{"impossible length", func() string { s := segments(t, valid()); return s[0] + "." + s[1] + "." + s[2] + "AAA" }, req, dpop.CodeInvalidProof, "not base64url"},

		// JSON
		{"header not JSON", func() string { return es.SignRaw([]byte("not json"), []byte(claimsJSON(""))) }, req, dpop.CodeInvalidProof, "header is not a JSON object"},
		{"header array", func() string { return es.SignRaw([]byte("[1]"), []byte(claimsJSON(""))) }, req, dpop.CodeInvalidProof, "header is not a JSON object"},
		{"header trailing data", func() string { return es.SignRaw([]byte(hdr+"{}"), []byte(claimsJSON(""))) }, req, dpop.CodeInvalidProof, "header is not a JSON object"},
		{"claims not JSON", func() string { return raw(hdr, `{"jti":`) }, req, dpop.CodeInvalidProof, "claims are not a JSON object"},
		{"claims invalid UTF-8", func() string { return raw(hdr, claimsJSON(`,"x":"`+"\xff"+`"`)) }, req, dpop.CodeInvalidProof, "claims are not a JSON object"},
		{"duplicate claim", func() string { return raw(hdr, claimsJSON(`,"jti":"j2"`)) }, req, dpop.CodeInvalidProof, "duplicate member names"},
		{"duplicate claim escaped", func() string { return raw(hdr, claimsJSON(`,"\u006ati":"j2"`)) }, req, dpop.CodeInvalidProof, "duplicate member names"},
		{"duplicate nested", func() string { return raw(hdr, claimsJSON(`,"x":[{"a":1,"a":2}]`)) }, req, dpop.CodeInvalidProof, "duplicate member names"},
		{"duplicate header member", func() string {
			return raw(`{"typ":"dpop+jwt","typ":"dpop+jwt","alg":"ES256","jwk":`+jwkJSON(es)+`}`, claimsJSON(""))
		}, req, dpop.CodeInvalidProof, "duplicate member names"},
		{"duplicate jwk member", func() string {
			j := jwkJSON(es)
			return raw(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+j[:len(j)-1]+`,"kty":"EC"}}`, claimsJSON(""))
		}, req, dpop.CodeInvalidProof, "header has duplicate member names"},
		{"claim name case", func() string {
			return raw(hdr, `{"JTI":"j1","htm":"GET","htu":"`+testURL+`","iat":`+itoa(now.Unix())+`}`)
		}, req, dpop.CodeInvalidProof, "jti is missing"},
		{"claim names equal but for case", func() string {
			return raw(hdr, `{"jti":"j1","htm":"GET","HTM":"POST","htu":"`+testURL+`","iat":`+itoa(now.Unix())+`}`)
		}, req, dpop.CodeInvalidProof, "claims have duplicate member names"},
		{"header names equal but for case", func() string {
			return raw(`{"typ":"dpop+jwt","alg":"ES256","ALG":"none","jwk":`+jwkJSON(es)+`}`, claimsJSON(""))
		}, req, dpop.CodeInvalidProof, "header has duplicate member names"},

		// signature
		{"bad signature", func() string { return flip(valid()) }, req, dpop.CodeInvalidProof, "signature does not verify"},
		{"signature by another key", func() string {
			s := segments(t, valid())
			o := segments(t, ks["ES256-other"].Proof(testMethod, testURL, at))
			return s[0] + "." + s[1] + "." + o[2]
		}, req, dpop.CodeInvalidProof, "signature does not verify"},
		{"claims changed after signing", func() string {
			s := segments(t, valid())
			return s[0] + "." + b64(claimsJSON("")) + "." + s[2]
		}, req, dpop.CodeInvalidProof, "signature does not verify"},
		{"bad RSA signature", func() string { return flip(ks["RS256"].Proof(testMethod, testURL, at)) }, req, dpop.CodeInvalidProof, "signature does not verify"},
		{"bad EdDSA signature", func() string { return flip(ks["EdDSA"].Proof(testMethod, testURL, at)) }, req, dpop.CodeInvalidProof, "signature does not verify"},

		// claims
		{"missing jti", func() string { return es.Proof(testMethod, testURL, at, delClaim("jti")) }, req, dpop.CodeInvalidProof, "jti is missing"},
		{"empty jti", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithJTI("")) }, req, dpop.CodeInvalidProof, "jti is missing"},
		{"jti 256 bytes", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithJTI(strings.Repeat("j", 256))) }, req, "", ""},
		{"jti 257 bytes", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithJTI(strings.Repeat("j", 257))) }, req, dpop.CodeInvalidProof, "longer than 256"},
		{"jti not string", func() string { return es.Proof(testMethod, testURL, at, setClaim("jti", 7)) }, req, dpop.CodeInvalidProof, "jti is not a string"},
		{"wrong htm", func() string { return es.Proof("POST", testURL, at) }, req, dpop.CodeInvalidProof, "htm does not match"},
		{"htm case", func() string { return es.Proof("get", testURL, at) }, req, dpop.CodeInvalidProof, "htm does not match"},
		{"missing htm", func() string { return es.Proof(testMethod, testURL, at, delClaim("htm")) }, req, dpop.CodeInvalidProof, "htm is missing"},
		{"missing htu", func() string { return es.Proof(testMethod, testURL, at, delClaim("htu")) }, req, dpop.CodeInvalidProof, "htu is missing"},
		{"htu other host", func() string { return es.Proof(testMethod, "https://evil.example.com/v1/things", at) }, req, dpop.CodeInvalidProof, "htu does not match"},
		{"htu other port", func() string { return es.Proof(testMethod, "https://api.example.com:8443/v1/things", at) }, req, dpop.CodeInvalidProof, "htu does not match"},
		{"htu other path", func() string { return es.Proof(testMethod, "https://api.example.com/v1/other", at) }, req, dpop.CodeInvalidProof, "htu does not match"},
		{"htu path case", func() string { return es.Proof(testMethod, "https://api.example.com/V1/things", at) }, req, dpop.CodeInvalidProof, "htu does not match"},
		{"htu other scheme", func() string { return es.Proof(testMethod, "http://api.example.com/v1/things", at) }, req, dpop.CodeInvalidProof, "htu does not match"},
		{"htu relative", func() string { return es.Proof(testMethod, "/v1/things", at) }, withURL("/v1/things"), dpop.CodeInvalidProof, "htu does not match"},
		{"htu not http", func() string { return es.Proof(testMethod, "ftp://api.example.com/v1/things", at) }, withURL("ftp://api.example.com/v1/things"), dpop.CodeInvalidProof, "htu does not match"},
		{"htu default port", func() string { return es.Proof(testMethod, "https://api.example.com:443/v1/things", at) }, req, "", ""},
		{"htu case of scheme and host", func() string { return es.Proof(testMethod, "HTTPS://API.Example.COM/v1/things", at) }, req, "", ""},
		{"htu query and fragment ignored", func() string { return es.Proof(testMethod, testURL+"?a=1#top", at) }, withURL(testURL + "?b=2"), "", ""},
		{"htu %7E is ~", func() string { return es.Proof(testMethod, "https://api.example.com/~user/%7euser", at) }, withURL("https://api.example.com/%7Euser/~user"), "", ""},
		{"htu dot segments", func() string { return es.Proof(testMethod, "https://api.example.com/v1/x/../things", at) }, req, "", ""},
		{"htu empty path", func() string { return es.Proof(testMethod, "https://api.example.com", at) }, withURL("https://api.example.com/"), "", ""},
		{"missing iat", func() string { return es.Proof(testMethod, testURL, at, delClaim("iat")) }, req, dpop.CodeInvalidProof, "iat is missing"},
		{"iat string", func() string { return es.Proof(testMethod, testURL, at, setClaim("iat", itoa(now.Unix()))) }, req, dpop.CodeInvalidProof, "iat is not a NumericDate"},
		{"iat negative", func() string { return es.Proof(testMethod, testURL, at, setClaim("iat", -1)) }, req, dpop.CodeInvalidProof, "iat is not a NumericDate"},
		{"iat huge", func() string { return raw(hdr, `{"jti":"j","htm":"GET","htu":"`+testURL+`","iat":1e300}`) }, req, dpop.CodeInvalidProof, "iat is not a NumericDate"},
		{"iat fraction", func() string {
			return raw(hdr, `{"jti":"j","htm":"GET","htu":"`+testURL+`","iat":`+itoa(now.Unix())+`.5}`)
		}, req, "", ""},
		{"stale iat", func() string { return es.Proof(testMethod, testURL, dpoptest.WithIAT(now.Add(-61*time.Second))) }, req, dpop.CodeInvalidProof, "stale"},
		{"iat at max age", func() string { return es.Proof(testMethod, testURL, dpoptest.WithIAT(now.Add(-60*time.Second))) }, req, "", ""},
		{"future iat", func() string { return es.Proof(testMethod, testURL, dpoptest.WithIAT(now.Add(6*time.Second))) }, req, dpop.CodeInvalidProof, "in the future"},
		{"iat at max skew", func() string { return es.Proof(testMethod, testURL, dpoptest.WithIAT(now.Add(5*time.Second))) }, req, "", ""},

		// ath and jkt
		{"ath right", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithATH(testToken)) }, dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken}, "", ""},
		{"ath wrong", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithATH("other-token")) }, dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken}, dpop.CodeInvalidProof, "ath does not match"},
		{"ath missing", valid, dpop.Request{Method: testMethod, URL: testURL, AccessToken: testToken}, dpop.CodeInvalidProof, "ath is missing"},
		{"ath not checked without token", func() string { return es.Proof(testMethod, testURL, at, dpoptest.WithATH("other-token")) }, req, "", ""},
		{"jkt right", valid, dpop.Request{Method: testMethod, URL: testURL, JKT: es.JKT()}, "", ""},
		{"jkt mismatch", valid, dpop.Request{Method: testMethod, URL: testURL, JKT: ks["ES256-other"].JKT()}, dpop.CodeInvalidProof, "does not match the token's jkt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := fakeclock.New()
			v := newVerifier(t, clock, nil)
			p, err := v.Verify(tc.proof(), tc.req)
			checkErr(t, err, tc.code, tc.desc)
			if err == nil && p.JKT == "" {
				t.Fatal("accepted proof has no JKT")
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
