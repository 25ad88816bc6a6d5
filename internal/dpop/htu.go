package dpop

import (
	"errors"
	"strconv"
	"strings"
)

// NormalizeURL returns the form `htu` is compared in: lower-case scheme
// and host, default port removed, empty path as "/", percent-encoding
// normalised (RFC 3986 §6.2.2, §6.2.3), query and fragment dropped. An
// URL that is not absolute http(s) is an error.
//
// In detail: percent-encoded unreserved characters are decoded ("%7E" is
// "~"), other percent-encodings get upper-case hex digits, bytes a path
// may not hold literally (spaces, non-ASCII, controls) are
// percent-encoded, and "." and ".." segments are removed (RFC 3986
// §5.2.4). Userinfo, an invalid port or a malformed percent-encoding are
// errors.
func NormalizeURL(raw string) (string, error) {
	i := strings.Index(raw, "://")
	if i <= 0 {
		return "", errors.New("not an absolute URL")
	}
	scheme := strings.ToLower(raw[:i])
	var defaultPort string
	switch scheme {
	case "http":
		defaultPort = "80"
	case "https":
		defaultPort = "443"
	default:
		return "", errors.New("scheme is not http or https")
	}
	rest := raw[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, rest := rest[:end], rest[end:]
	if q := strings.IndexAny(rest, "?#"); q >= 0 {
		rest = rest[:q]
	}
	host, port, err := splitHostPort(authority)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(authority) + len(rest) + 1)
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	if port != "" && port != defaultPort {
		b.WriteByte(':')
		b.WriteString(port)
	}
	if err := writePath(&b, rest); err != nil {
		return "", err
	}
	return b.String(), nil
}

// splitHostPort returns the lower-case host (an IPv6 literal keeps its
// brackets) and the port without leading zeros ("" when absent or empty).
func splitHostPort(authority string) (host, port string, err error) {
	if strings.ContainsRune(authority, '@') {
		return "", "", errors.New("URL has userinfo")
	}
	host = authority
	if strings.HasPrefix(authority, "[") {
		j := strings.IndexByte(authority, ']')
		if j < 0 {
			return "", "", errors.New("URL has an unterminated IPv6 literal")
		}
		host, port = authority[:j+1], authority[j+1:]
		if port != "" && port[0] != ':' {
			return "", "", errors.New("URL has an invalid port")
		}
		if port != "" {
			port = port[1:]
		}
		for k := 1; k < j; k++ {
			c := host[k]
			if !isHex(c) && c != ':' && c != '.' {
				return "", "", errors.New("URL has an invalid IPv6 literal")
			}
		}
	} else if j := strings.LastIndexByte(authority, ':'); j >= 0 {
		host, port = authority[:j], authority[j+1:]
	}
	if host == "" || host == "[]" {
		return "", "", errors.New("URL has no host")
	}
	for k := 0; k < len(host); k++ {
		c := host[k]
		if c == '[' || c == ']' {
			continue
		}
		if !isUnreserved(c) && c != ':' {
			return "", "", errors.New("URL has an invalid host")
		}
	}
	host = strings.ToLower(host)
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || port[0] == '+' {
			return "", "", errors.New("URL has an invalid port")
		}
		port = strconv.FormatUint(p, 10)
	}
	return host, port, nil
}

const upperHex = "0123456789ABCDEF"

// writePath writes the path in normal form, "/" when empty.
func writePath(b *strings.Builder, path string) error {
	if path == "" {
		b.WriteByte('/')
		return nil
	}
	// Normalise the encoding first, then remove dot segments: "%2E%2E" is
	// ".." once decoded (unreserved), as RFC 3986 §6.2.2 orders it.
	var enc strings.Builder
	enc.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return errors.New("URL has an invalid percent-encoding")
			}
			d := unhex(path[i+1])<<4 | unhex(path[i+2])
			if isUnreserved(d) {
				enc.WriteByte(d)
			} else {
				enc.WriteByte('%')
				enc.WriteByte(upperHex[d>>4])
				enc.WriteByte(upperHex[d&15])
			}
			i += 2
		case isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' || c == '/':
			enc.WriteByte(c)
		default:
			enc.WriteByte('%')
			enc.WriteByte(upperHex[c>>4])
			enc.WriteByte(upperHex[c&15])
		}
	}
	b.WriteString(removeDotSegments(enc.String()))
	return nil
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func isSubDelim(c byte) bool {
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
