package dpop

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// referenceObject is the slow reading jsonObject must agree with:
// encoding/json's token stream, every object's names (unescaped) unique.
func referenceObject(b []byte) (ok, dup bool) {
	if !json.Valid(b) || !utf8.Valid(b) {
		return false, false
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return false, false
	}
	d := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		obj   bool
		names map[string]bool
		key   bool // next string token in an object is a name
	}
	var stack []*frame
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return true, false
		}
		if err != nil {
			return false, false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		_, isDelim := tok.(json.Delim)
		if top != nil && top.obj && top.key && !isDelim {
			name := tok.(string)
			if top.names[name] {
				return true, true
			}
			top.names[name] = true
			top.key = false
			continue
		}
		if top != nil && top.obj {
			top.key = true // after this value
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, names: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].key = true
			}
		}
	}
}

func depth(b []byte) int {
	d, m := 0, 0
	in, esc := false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case in && c == '\\':
			esc = true
		case c == '"':
			in = !in
		case !in && (c == '{' || c == '['):
			d++
			m = max(m, d)
		case !in && (c == '}' || c == ']'):
			d--
		}
	}
	return m
}

func TestJSONObject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{}`, nil},
		{` {"a":1,"b":[1,2,{"c":null}],"d":{"e":true,"f":false},"g":-1.5e+3} `, nil},
		{`{"a":"\u00e9\n\"x"}`, nil},
		{`{"a":1,"A":2}`, nil},
		{`{"a":1,"a":2}`, errDuplicate},
		{`{"a":1,"\u0061":2}`, errDuplicate},
		{`{"x":{"a":1,"a":2}}`, errDuplicate},
		{`{"x":[[{"a":1,"a":2}]]}`, errDuplicate},
		{`{"a":1}{}`, errJSON},
		{`[]`, errJSON},
		{`{"a":01}`, errJSON},
		{`{"a":1.}`, errJSON},
		{`{"a":"` + "\x01" + `"}`, errJSON},
		{`{"a":"\x"}`, errJSON},
		{`{"a":"\u12"}`, errJSON},
		{`{"a" 1}`, errJSON},
		{`{"a":1,}`, errJSON},
		{`{"a":tru}`, errJSON},
		{`{"a":"` + "\xff" + `"}`, errJSON},
		{`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, errJSON},
	} {
		if err := jsonObject([]byte(tc.in), nil); err != tc.want {
			t.Errorf("jsonObject(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
	// Past 16 members the duplicate check goes through a map.
	var b strings.Builder
	b.WriteString("{")
	for i := range 40 {
		b.WriteString(`"m` + itoa(i) + `":1,`)
	}
	if err := jsonObject([]byte(b.String()+`"m39":2}`), nil); err != errDuplicate {
		t.Errorf("40 members, last repeated: %v", err)
	}
	if err := jsonObject([]byte(b.String()+`"m40":2}`), nil); err != nil {
		t.Errorf("41 distinct members: %v", err)
	}
}

// FuzzJSONObject holds the one-pass scanner to encoding/json: it accepts
// exactly the objects encoding/json reads (valid UTF-8, nesting within its
// limit) whose objects have unique names.
func FuzzJSONObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"b":[1,"\u0062",{"c":1,"c":2}]}}`, `{"\u0061":1,"a":2}`, `{"a":-0.5e-7}`, `{"a":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := jsonObject(b, nil)
		ok, dup := referenceObject(b)
		switch {
		case err == nil && (!ok || dup):
			t.Fatalf("jsonObject accepted %q (reference: valid %v, duplicate %v)", b, ok, dup)
		case err == errDuplicate && ok && !dup:
			t.Fatalf("jsonObject found a duplicate in %q, the reference none", b)
		case err != nil && ok && !dup && depth(b) <= maxJSONDepth:
			t.Fatalf("jsonObject refused %q: %v (reference accepts)", b, err)
		}
	})
}
