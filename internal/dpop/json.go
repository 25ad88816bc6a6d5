package dpop

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
	"unsafe"
)

// A proof's header, claims and jwk are read by one pass over their bytes
// (jsonScan) rather than by encoding/json's reflection: it checks the JSON
// grammar (RFC 8259) of every value, refuses duplicate member names in every
// object at any depth (compared after unescaping, so "a" and "\u0061" are
// the same name), and hands the caller the raw bytes of each top-level
// member's value. Member names are matched exactly: encoding/json would
// also fill a field "htm" from a member "HTM".

// maxJSONDepth bounds nesting; a proof has no reason to nest deeper than
// the jwk object, and recursion stays shallow.
const maxJSONDepth = 32

var (
	errJSON      = errors.New("malformed JSON")
	errDuplicate = errors.New("duplicate member name")
	errNotString = errors.New("not a string")
)

type jsonScan struct {
	b     []byte
	i     int
	depth int
}

// jsonObject reads b as exactly one JSON object (surrounding whitespace
// allowed) and calls visit with each of its members' name and raw value.
func jsonObject(b []byte, visit func(name, value []byte) error) error {
	s := jsonScan{b: b}
	s.space()
	if s.i >= len(b) || b[s.i] != '{' {
		return errJSON
	}
	if err := s.object(visit); err != nil {
		return err
	}
	s.space()
	if s.i != len(b) {
		return errJSON
	}
	return nil
}

func (s *jsonScan) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScan) value() error {
	s.space()
	if s.i >= len(s.b) {
		return errJSON
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(nil)
	case c == '[':
		return s.array()
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return errJSON
}

func (s *jsonScan) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return errJSON
	}
	s.i += len(lit)
	return nil
}

func (s *jsonScan) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *jsonScan) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return errJSON
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if s.digits() == 0 {
		return errJSON
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return errJSON
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return errJSON
		}
	}
	return nil
}

// str reads the string starting at s.i (a '"'): raw is its content between
// the quotes, still escaped when esc.
func (s *jsonScan) str() (raw []byte, esc bool, err error) {
	s.i++
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(raw) {
				return nil, false, errJSON
			}
			return raw, esc, nil
		case c == '\\':
			esc = true
			s.i++
			if s.i >= len(s.b) {
				return nil, false, errJSON
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if len(s.b)-s.i < 5 {
					return nil, false, errJSON
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return nil, false, errJSON
					}
				}
				s.i += 5
			default:
				return nil, false, errJSON
			}
		case c < 0x20:
			return nil, false, errJSON
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			s.i++
		}
	}
	return nil, false, errJSON
}

func (s *jsonScan) array() error {
	s.depth++
	if s.depth > maxJSONDepth {
		return errJSON
	}
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if err := s.value(); err != nil {
			return err
		}
		s.space()
		if s.i >= len(s.b) {
			return errJSON
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return errJSON
		}
	}
}

// smallObject is how many names are compared pairwise before a map takes
// over (an object with thousands of members stays linear).
const smallObject = 16

func (s *jsonScan) object(visit func(name, value []byte) error) error {
	s.depth++
	if s.depth > maxJSONDepth {
		return errJSON
	}
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	var small [smallObject][]byte
	names := small[:0]
	var seen map[string]struct{}
	for {
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errJSON
		}
		name, esc, err := s.str()
		if err != nil {
			return err
		}
		if esc {
			name = []byte(unescape(s.b[s.i-len(name)-2 : s.i]))
		}
		switch {
		case seen != nil:
			if _, dup := seen[string(name)]; dup {
				return errDuplicate
			}
			seen[string(name)] = struct{}{}
		case len(names) < smallObject:
			for _, n := range names {
				if bytes.Equal(n, name) {
					return errDuplicate
				}
			}
			names = append(names, name)
		default:
			seen = make(map[string]struct{}, 2*smallObject)
			for _, n := range names {
				seen[string(n)] = struct{}{}
			}
			if _, dup := seen[string(name)]; dup {
				return errDuplicate
			}
			seen[string(name)] = struct{}{}
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errJSON
		}
		s.i++
		s.space()
		start := s.i
		if err := s.value(); err != nil {
			return err
		}
		if visit != nil {
			if err := visit(name, s.b[start:s.i]); err != nil {
				return err
			}
		}
		s.space()
		if s.i >= len(s.b) {
			return errJSON
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return errJSON
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// unescape decodes a quoted JSON string the scanner already checked. The
// rare escaped string goes through encoding/json (lone surrogates become
// U+FFFD as there).
func unescape(quoted []byte) string {
	var out string
	if err := json.Unmarshal(quoted, &out); err != nil {
		return ""
	}
	return out
}

// jsonString is the value of a member that must be a string: a view of the
// scanned bytes, or a decoded copy when escaped.
func jsonString(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", errNotString
	}
	if bytes.IndexByte(v, '\\') >= 0 {
		return unescape(v), nil
	}
	if len(v) == 2 {
		return "", nil
	}
	// The scanned buffer is never written once decoded (see decodeSegment),
	// so a string view of it is safe and saves an allocation per member.
	return unsafe.String(&v[1], len(v)-2), nil
}
