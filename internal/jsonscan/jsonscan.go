// Package jsonscan reads one JSON object by one hand-written pass over its
// bytes instead of encoding/json's token stream and reflection: it checks
// the grammar as encoding/json does (RFC 8259), finds keys that are equal
// or differ only in case (after unescaping) in every object at any depth,
// and, when asked, builds the decoded value as encoding/json would (objects
// as map[string]any, numbers as json.Number) or hands a visitor the raw
// bytes of each top-level member's value.
//
// Parsers disagree on objects with such keys — Go keeps the last duplicate
// and matches struct fields case-insensitively, others keep the first — so
// a second reader of a token or proof could see something else than what
// was checked; callers refuse them.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is encoding/json's nesting limit, the one ParseObject and
// CheckObject apply.
const MaxDepth = 10000

// ErrSyntax is input encoding/json would not decode as an object.
var ErrSyntax = errors.New("invalid JSON")

// ErrNotUTF8 is input that is not valid UTF-8.
var ErrNotUTF8 = errors.New("not UTF-8")

// Strictness errors: the input decodes, but is refused by CheckObject.
var (
	ErrDuplicateKey = errors.New("duplicate key")
	ErrTrailingData = errors.New("data after the object")
)

type jsonParser struct {
	b []byte
	// s is b as a string when building: decoded strings without escapes
	// are its substrings, so the claims cost one copy of the payload
	// rather than one allocation per string.
	s     string
	i     int
	build bool
	depth int
	// maxDepth is the nesting limit (MaxDepth unless visiting).
	maxDepth int
	// firstProblem ends the pass at the first strictness error
	// (VisitObject).
	firstProblem bool
	// strict is the first duplicate (or case-variant) key found.
	strict error
}

// ParseObject reads b as one JSON object. err is a syntax error
// (encoding/json would not decode b as an object either); strict is a
// reason CheckObject refuses b although it decodes (a duplicate or
// case-variant key, data after the object). With build, obj is the object
// as encoding/json decodes it with UseNumber (sharing no memory with b).
// b must be valid UTF-8.
func ParseObject(b []byte, build bool) (obj map[string]any, strict, err error) {
	p := &jsonParser{b: b, build: build, maxDepth: MaxDepth}
	if build {
		p.s = string(b)
	}
	var kb [16]string // the first keys, on the stack (see object)
	p.space()
	if p.i >= len(b) || b[p.i] != '{' {
		return nil, nil, ErrSyntax
	}
	v, err := p.object(kb[:0], nil)
	if err != nil {
		return nil, nil, err
	}
	p.space()
	if p.i < len(b) {
		// encoding/json's Decoder stops after the object; a following '}'
		// or ']' does not start another value (what a caller decoding
		// with a Decoder and checking More would miss).
		if c := b[p.i]; c != '}' && c != ']' {
			return nil, nil, ErrSyntax
		}
		if p.strict == nil {
			p.strict = ErrTrailingData
		}
	}
	if build {
		obj, _ = v.(map[string]any)
	}
	return obj, p.strict, nil
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(keys []string) (any, error) {
	if p.i >= len(p.b) {
		return nil, ErrSyntax
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(keys, nil)
	case c == '[':
		return p.array(keys)
	case c == '"':
		start := p.i + 1
		raw, escaped, err := p.str()
		if err != nil || !p.build {
			return nil, err
		}
		if !escaped {
			return p.s[start : start+len(raw)], nil
		}
		return p.unquote(raw, escaped)
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		if err := p.number(); err != nil || !p.build {
			return nil, err
		}
		return json.Number(p.s[start:p.i]), nil
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, ErrSyntax
}

func (p *jsonParser) literal(s string) error {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return ErrSyntax
	}
	p.i += len(s)
	return nil
}

// object reads an object at p.b[p.i] == '{'. keys are the keys of the
// objects around it, innermost last (views of b when unescaped, so
// recording them allocates nothing); they are a parameter rather than a
// field of p, whose contents escape (the decoded strings), so that the
// caller's array for them stays on its stack. visit, when not nil, is
// called with each member (VisitObject, the top-level object only); it is
// a parameter rather than a field so that the caller's closure does not
// escape to the heap.
func (p *jsonParser) object(keys []string, visit func(name string, value []byte) error) (any, error) {
	empty, err := p.open('}')
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if p.build {
		m = make(map[string]any, 8)
	}
	if empty {
		return m, nil
	}
	first := len(keys)
	var folded map[string]bool // for objects with many keys
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, ErrSyntax
		}
		start := p.i + 1
		raw, escaped, err := p.str()
		if err != nil {
			return nil, err
		}
		key := unsafe.String(unsafe.SliceData(raw), len(raw))
		if escaped {
			if key, err = p.unquote(raw, true); err != nil {
				return nil, err
			}
		}
		if p.strict == nil {
			keys, folded = p.noteKey(keys, key, first, folded)
			if p.strict != nil && p.firstProblem {
				return nil, p.strict
			}
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, ErrSyntax
		}
		p.i++
		p.space()
		vstart := p.i
		v, err := p.value(keys)
		if err != nil {
			return nil, err
		}
		if visit != nil {
			if err := visit(key, p.b[vstart:p.i]); err != nil {
				return nil, err
			}
		}
		if p.build {
			if !escaped {
				key = p.s[start : start+len(raw)] // the map outlives b
			}
			m[key] = v
		}
		end, err := p.next('}')
		if err != nil {
			return nil, err
		}
		if end {
			return m, nil
		}
	}
}

// noteKey records key among the keys of the object whose first key is at
// keys[first], setting p.strict when an equal key (under Unicode case
// folding) is there already. Beyond a few keys the folded spellings go in
// a map, so an object with thousands of keys is not compared pairwise.
func (p *jsonParser) noteKey(keys []string, key string, first int, folded map[string]bool) ([]string, map[string]bool) {
	const linear = 16
	if folded == nil {
		for _, k := range keys[first:] {
			if strings.EqualFold(k, key) {
				p.strict = ErrDuplicateKey
				return keys, nil
			}
		}
		if len(keys)-first < linear {
			return append(keys, key), nil
		}
		folded = make(map[string]bool, 2*linear)
		for _, k := range keys[first:] {
			folded[foldKey(k)] = true
		}
	}
	f := foldKey(key)
	if folded[f] {
		p.strict = ErrDuplicateKey
	}
	folded[f] = true
	return keys, folded
}

func (p *jsonParser) array(keys []string) (any, error) {
	empty, err := p.open(']')
	if err != nil {
		return nil, err
	}
	var a []any
	if p.build {
		a = []any{}
	}
	if empty {
		return a, nil
	}
	for {
		p.space()
		v, err := p.value(keys)
		if err != nil {
			return nil, err
		}
		if p.build {
			a = append(a, v)
		}
		end, err := p.next(']')
		if err != nil {
			return nil, err
		}
		if end {
			return a, nil
		}
	}
}

// open reads the '{' or '[' at p.b[p.i] and the whitespace after it,
// entering one more level of nesting; empty is true when its closing
// bracket follows at once (read too).
func (p *jsonParser) open(closing byte) (empty bool, err error) {
	if p.depth++; p.depth > p.maxDepth {
		return false, ErrSyntax
	}
	p.i++
	p.space()
	if p.i < len(p.b) && p.b[p.i] == closing {
		p.i++
		p.depth--
		return true, nil
	}
	return false, nil
}

// next reads what follows a member or an element: a ',' (more follow) or
// the closing bracket, which ends the level (end).
func (p *jsonParser) next(closing byte) (end bool, err error) {
	p.space()
	if p.i >= len(p.b) {
		return false, ErrSyntax
	}
	switch p.b[p.i] {
	case ',':
		p.i++
		return false, nil
	case closing:
		p.i++
		p.depth--
		return true, nil
	}
	return false, ErrSyntax
}

// str reads a string at p.b[p.i] == '"' and returns what is between the
// quotes; escaped says it holds a backslash escape.
func (p *jsonParser) str() (raw []byte, escaped bool, err error) {
	p.i++
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			raw = p.b[start:p.i]
			p.i++
			return raw, escaped, nil
		case c < 0x20:
			return nil, false, ErrSyntax
		case c == '\\':
			escaped = true
			if p.i+1 >= len(p.b) {
				return nil, false, ErrSyntax
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if len(p.b)-p.i < 6 || !isHex4(p.b[p.i+2:p.i+6]) {
					return nil, false, ErrSyntax
				}
				p.i += 6
			default:
				return nil, false, ErrSyntax
			}
		default:
			p.i++
		}
	}
	return nil, false, ErrSyntax
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// unquote returns the string raw spells; escapes are resolved by
// encoding/json itself (lone surrogates and all), which is rare enough in
// tokens not to be worth a copy of its rules.
func (p *jsonParser) unquote(raw []byte, escaped bool) (string, error) {
	if !escaped {
		return string(raw), nil
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", ErrSyntax
	}
	return s, nil
}

// number reads a number (RFC 8259 §6) at p.b[p.i].
func (p *jsonParser) number() error {
	b := p.b
	if b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(b) && b[p.i] == '0':
		p.i++
	case p.i < len(b) && b[p.i] >= '1' && b[p.i] <= '9':
		p.digits()
	default:
		return ErrSyntax
	}
	if p.i < len(b) && b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return ErrSyntax
		}
	}
	if p.i < len(b) && (b[p.i] == 'e' || b[p.i] == 'E') {
		p.i++
		if p.i < len(b) && (b[p.i] == '+' || b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return ErrSyntax
		}
	}
	return nil
}

func (p *jsonParser) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// CheckObject accepts exactly one JSON object, valid UTF-8, in which no
// object at any depth has two keys that are equal or differ only in case
// (after unescaping).
func CheckObject(b []byte) error {
	if !utf8.Valid(b) {
		return ErrNotUTF8
	}
	_, strict, err := ParseObject(b, false)
	if err != nil {
		return err
	}
	return strict
}

// VisitObject checks b as CheckObject does, with nesting limited to
// maxDepth, and calls visit with the name (unescaped) and the raw value
// (whitespace trimmed) of each top-level member in order. It returns the
// first problem in reading order: ErrNotUTF8, ErrSyntax, ErrDuplicateKey,
// ErrTrailingData, or visit's error, which ends the pass. name and value
// are views of b, valid while b is.
func VisitObject(b []byte, maxDepth int, visit func(name string, value []byte) error) error {
	if !utf8.Valid(b) {
		return ErrNotUTF8
	}
	p := &jsonParser{b: b, maxDepth: maxDepth, firstProblem: true}
	var kb [16]string // the first keys, on the stack (see object)
	p.space()
	if p.i >= len(b) || b[p.i] != '{' {
		return ErrSyntax
	}
	if _, err := p.object(kb[:0], visit); err != nil {
		return err
	}
	p.space()
	if p.i < len(b) {
		if c := b[p.i]; c != '}' && c != ']' {
			return ErrSyntax
		}
		return ErrTrailingData
	}
	return nil
}

// String returns the string the raw value v (as VisitObject passes it)
// spells; ok is false when v is not a string. Without escapes the result
// shares v's memory: v must not be written while it is in use.
func String(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		if len(v) == 2 {
			return "", true
		}
		return unsafe.String(&v[1], len(v)-2), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// foldKey maps every rune to the smallest rune of its Unicode case-folding
// orbit, so keys equal under case folding (encoding/json's matching, "K"
// and the Kelvin sign included) fold to the same string.
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s) // the smallest of {A, a} is A
	}
	return strings.Map(func(r rune) rune {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		return m
	}, s)
}
