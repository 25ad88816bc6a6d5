package extauthz

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// header is one name/value pair to send.
type header struct{ name, value string }

// identityMapper turns verified claims into identity headers. It is built
// once from the config; per request there is no parsing and no error.
type identityMapper struct {
	fields        []claimField
	payloadHeader string
	encode        func(string) string
	listSep       func(string) string // escapes the list separator inside one array element
	// names is every header this mapper may set, lower case: on any answer
	// each one is either set or removed (anti-spoofing). It also holds
	// others.
	names []string
	// others are the headers other apps' mappings set and this one does
	// not: always removed, so a client cannot send one to this app either.
	others []string
	// canonical are the HTTP (canonical) spellings of the names this
	// mapper sets, computed once so that a cache entry shares them.
	canonical map[string]string
}

// canonicalName is name's canonical HTTP spelling, shared for a name the
// mapper sets.
func (m *identityMapper) canonicalName(name string) string {
	if c, ok := m.canonical[name]; ok {
		return c
	}
	return http.CanonicalHeaderKey(name)
}

// alsoRemove adds to the headers m removes on every answer those of all
// (lower case) that it does not set itself.
func (m *identityMapper) alsoRemove(all []string) *identityMapper {
	for _, n := range all {
		if !contains(m.names, n) {
			m.names = append(m.names, n)
			m.others = append(m.others, n)
		}
	}
	return m
}

type claimField struct {
	name string
	path []string
}

func newIdentityMapper(c HeaderConfig) *identityMapper {
	m := &identityMapper{payloadHeader: strings.ToLower(c.PayloadHeader)}
	for _, h := range c.Identity {
		name := strings.ToLower(h.Name)
		m.fields = append(m.fields, claimField{name: name, path: strings.Split(h.Claim, ".")})
		m.names = append(m.names, name)
	}
	if m.payloadHeader != "" {
		m.names = append(m.names, m.payloadHeader)
	}
	m.canonical = make(map[string]string, len(m.names))
	for _, n := range m.names {
		m.canonical[n] = http.CanonicalHeaderKey(n)
	}
	switch c.Encoding {
	case "rfc2047":
		m.encode = encodeRFC2047
		// An element holding the separator becomes an encoded word too, so
		// splitting on "," and decoding each part gives the list back.
		m.listSep = func(s string) string {
			if strings.IndexByte(s, ',') >= 0 {
				return encodedWord(s)
			}
			return s
		}
	default:
		m.encode = encodePercent
		m.listSep = func(s string) string { return strings.ReplaceAll(s, ",", "%2C") }
	}
	return m
}

// headers returns the headers to set from claims and the mapped names to
// remove because nothing sets them. No name is ever in both.
func (m *identityMapper) headers(claims map[string]any, payload []byte) (set []header, unset []string) {
	for _, f := range m.fields {
		v, ok := m.value(claims, f.path)
		if !ok {
			unset = append(unset, f.name)
			continue
		}
		set = append(set, header{f.name, v})
	}
	if m.payloadHeader != "" {
		set = append(set, header{m.payloadHeader, base64.RawURLEncoding.EncodeToString(payload)})
	}
	unset = append(unset, m.others...)
	return set, unset
}

// value formats the claim at path: strings as they are, numbers and bools
// formatted, arrays of those comma-joined; objects and empty values are
// not sent. The result is encoded so it is always a safe header value.
func (m *identityMapper) value(claims map[string]any, path []string) (string, bool) {
	v, ok := lookupClaim(claims, path)
	if !ok {
		return "", false
	}
	var s string
	if list, isList := v.([]any); isList {
		parts := make([]string, 0, len(list))
		for _, e := range list {
			if es, ok := scalar(e); ok {
				parts = append(parts, m.listSep(m.encode(es)))
			}
		}
		s = strings.Join(parts, ",")
	} else {
		if s, ok = scalar(v); !ok {
			return "", false
		}
		s = m.encode(s)
	}
	if s == "" || !safeHeaderValue(s) {
		return "", false
	}
	return s, true
}

// lookupClaim follows a dotted path through nested objects.
func lookupClaim(claims map[string]any, path []string) (any, bool) {
	var cur any = claims
	for _, seg := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[seg]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

func scalar(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

// encodePercent percent-encodes (RFC 3986, upper-case hex) every byte that
// is not printable ASCII, and `%` itself, so a consumer that always
// percent-decodes gets the exact UTF-8 value back; CR, LF and every other
// control character can never appear raw.
func encodePercent(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsPercent(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsPercent(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func needsPercent(c byte) bool { return c < 0x20 || c > 0x7e || c == '%' }

// encodeRFC2047 writes a value that is not printable ASCII, or that holds
// "=?" (it could be read as an encoded word: "=?UTF-8?b?YWRtaW4=?="
// decodes to "admin"), as one RFC 2047 encoded word, =?UTF-8?b?<base64>?=
// (decode with Go's mime.WordDecoder, Python's email.header). Any other
// printable ASCII is sent as is.
func encodeRFC2047(s string) string {
	if strings.Contains(s, "=?") {
		return encodedWord(s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return encodedWord(s)
		}
	}
	return s
}

func encodedWord(s string) string {
	return "=?UTF-8?b?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}

// safeHeaderValue is the last guard: printable ASCII only, never CR, LF or
// another control character.
func safeHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
