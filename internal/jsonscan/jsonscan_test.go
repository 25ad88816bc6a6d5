package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkJSONObjectStream is the reference for CheckObject: the same rules
// on encoding/json's token stream (what the parser replaced).
func checkJSONObjectStream(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	if err := walkObjectStream(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

func walkObjectStream(dec *json.Decoder) error {
	seen := map[string]bool{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return nil
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		f := foldKey(key)
		if seen[f] {
			return errors.New("duplicate key")
		}
		seen[f] = true
		if err := walkValueStream(dec); err != nil {
			return err
		}
	}
}

func walkValueStream(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		return walkObjectStream(dec)
	case '[':
		for dec.More() {
			if err := walkValueStream(dec); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return errors.New("unexpected delimiter")
}

var jsonScanSeeds = []string{
	`{}`, ` {"a":1} `, `{"a":1,"A":2}`, `{"a":{"b":1,"B":2}}`, `{"a":[{"k":1,"\u004b":2}]}`,
	`{"\u212a":1,"k":2}`, `{"a":"\ud800"}`, `{"\ud800":1,"\udc00":2}`, `{"a":1}}`, `{"a":1}]`, `{"a":1} x`,
	`{"a":1}{}`, `[1]`, `null`, `{"a":01}`, `{"a":-0.5e+3}`, `{"a":1.}`, `{"a":.5}`, `{"a":"\x"}`,
	`{"a":"` + "\x01" + `"}`, `{"a" 1}`, `{"a":1,}`, `{"a":[1,]}`, `{"a":tru}`, `{"a":true,"b":false,"c":null}`,
	`{"a":"\u00e9","b":"é"}`, "{\"a\":\"\xff\"}", `{"a":{"a":{"a":1}},"b":[[],{}]}`,
	`{"k1":1,"k2":1,"k3":1,"k4":1,"k5":1,"k6":1,"k7":1,"k8":1,"k9":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":1,"k17":1,"K3":1}`,
	`{"k1":1,"k2":1,"k3":1,"k4":1,"k5":1,"k6":1,"k7":1,"k8":1,"k9":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":1,"k17":1,"k18":1}`,
}

// decodeReference decodes b as encoding/json does with UseNumber: one
// object, nothing but whitespace, '}' or ']' after it (its Decoder stops
// before them).
func decodeReference(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	if obj == nil || dec.More() {
		return nil, errors.New("not a single JSON object")
	}
	return obj, nil
}

// FuzzJSONScan holds the parser to encoding/json: CheckObject accepts
// exactly what the token-stream check accepts, and ParseObject decodes
// (valid UTF-8) what encoding/json decodes, to the same value, refusing
// (strict) exactly what CheckObject refuses.
func FuzzJSONScan(f *testing.F) {
	for _, s := range jsonScanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxDepth {
			// Nesting beyond encoding/json's limit: the token stream
			// accepts it, decoding (and so the parser) does not.
			return
		}
		got, want := CheckObject(b), checkJSONObjectStream(b)
		if (got == nil) != (want == nil) {
			t.Fatalf("CheckObject(%q) = %v, token stream: %v", b, got, want)
		}
		if !utf8.Valid(b) {
			// ParseObject's callers check UTF-8 first.
			return
		}
		obj, strict, err := ParseObject(b, true)
		ref, refErr := decodeReference(b)
		if (err == nil) != (refErr == nil) {
			// ParseObject may decode what encoding/json does not only
			// when it also refuses it (strict).
			if err != nil || refErr == nil || strict == nil {
				t.Fatalf("ParseObject(%q): %v, encoding/json: %v", b, err, refErr)
			}
			return
		}
		if err != nil {
			return
		}
		if (strict == nil) != (want == nil) {
			t.Fatalf("ParseObject(%q) strict = %v, CheckObject: %v", b, strict, want)
		}
		if !reflect.DeepEqual(obj, ref) {
			t.Fatalf("ParseObject(%q) = %#v, encoding/json: %#v", b, obj, ref)
		}
	})
}

// depth is b's nesting depth, counting brackets outside strings.
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

type member struct {
	name  string
	value []byte
}

func visitAll(b []byte, maxDepth int) ([]member, error) {
	var ms []member
	err := VisitObject(b, maxDepth, func(name string, value []byte) error {
		ms = append(ms, member{name, value})
		return nil
	})
	return ms, err
}

// testDepth is the nesting limit the visitor tests use (a DPoP proof's).
const testDepth = 32

func TestJSONObject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{}`, nil},
		{` {"a":1,"b":[1,2,{"c":null}],"d":{"e":true,"f":false},"g":-1.5e+3} `, nil},
		{`{"a":"\u00e9\n\"x"}`, nil},
		{`{"a":1,"A":2}`, ErrDuplicateKey},
		{`{"x":{"k":1,"\u212a":2}}`, ErrDuplicateKey},
		{`{"a":1,"a":2}`, ErrDuplicateKey},
		{`{"a":1,"\u0061":2}`, ErrDuplicateKey},
		{`{"x":{"a":1,"a":2}}`, ErrDuplicateKey},
		{`{"x":[[{"a":1,"a":2}]]}`, ErrDuplicateKey},
		{`{"a":1,"a":2,`, ErrDuplicateKey}, // the first problem in reading order
		{`{"a":1}{}`, ErrSyntax},
		{`{"a":1}}`, ErrTrailingData},
		{`[]`, ErrSyntax},
		{`{"a":01}`, ErrSyntax},
		{`{"a":1.}`, ErrSyntax},
		{`{"a":"` + "\x01" + `"}`, ErrSyntax},
		{`{"a":"\x"}`, ErrSyntax},
		{`{"a":"\u12"}`, ErrSyntax},
		{`{"a" 1}`, ErrSyntax},
		{`{"a":1,}`, ErrSyntax},
		{`{"a":tru}`, ErrSyntax},
		{`{"a":"` + "\xff" + `"}`, ErrNotUTF8},
		{`{"a":` + strings.Repeat("[", testDepth-1) + strings.Repeat("]", testDepth-1) + `}`, nil},
		{`{"a":` + strings.Repeat("[", testDepth) + strings.Repeat("]", testDepth) + `}`, ErrSyntax},
	} {
		if _, err := visitAll([]byte(tc.in), testDepth); err != tc.want {
			t.Errorf("VisitObject(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
	// Past 16 members the duplicate check goes through a map.
	var b strings.Builder
	b.WriteString("{")
	for i := range 40 {
		b.WriteString(`"m` + strconv.Itoa(i) + `":1,`)
	}
	if _, err := visitAll([]byte(b.String()+`"M39":2}`), testDepth); err != ErrDuplicateKey {
		t.Errorf("40 members, last repeated: %v", err)
	}
	if _, err := visitAll([]byte(b.String()+`"m40":2}`), testDepth); err != nil {
		t.Errorf("41 distinct members: %v", err)
	}
}

// The visitor sees top-level members only, in order, names unescaped and
// values raw; its error ends the pass unchanged, before later problems.
func TestVisitObjectMembers(t *testing.T) {
	t.Parallel()
	ms, err := visitAll([]byte(` { "a" : [1, {"b":2}] ,"\u0063":"x\ty", "d":{"e":null}}`), testDepth)
	if err != nil {
		t.Fatal(err)
	}
	want := []member{{"a", []byte(`[1, {"b":2}]`)}, {"c", []byte(`"x\ty"`)}, {"d", []byte(`{"e":null}`)}}
	if !reflect.DeepEqual(ms, want) {
		t.Fatalf("members %q, want %q", ms, want)
	}
	stop := errors.New("stop")
	n := 0
	err = VisitObject([]byte(`{"a":1,"b":2,"a":3,`), testDepth, func(name string, _ []byte) error {
		n++
		if name == "b" {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("visitor error: %v after %d members", err, n)
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`"abc"`, "abc", true},
		{`""`, "", true},
		{`"a\u00e9\"b"`, "aé\"b", true},
		{`"\ud800"`, "\ufffd", true},
		{`7`, "", false},
		{`{"a":"b"}`, "", false},
		{`"`, "", false},
	} {
		if got, ok := String([]byte(tc.in)); got != tc.want || ok != tc.ok {
			t.Errorf("String(%s) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzJSONObject holds the visitor to the parser (and so to encoding/json,
// FuzzJSONScan): within its nesting limit VisitObject accepts exactly what
// CheckObject accepts, never reports a duplicate in an object CheckObject
// accepts, and visits the top-level members ParseObject builds, each raw
// value decoding to the built one.
func FuzzJSONObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"b":[1,"\u0062",{"c":1,"c":2}]}}`, `{"\u0061":1,"a":2}`, `{"a":-0.5e-7}`, `{"a":"\ud800"}`, `{"a":1,"A":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := visitAll(b, testDepth)
		want := CheckObject(b)
		switch {
		case err == nil && want != nil:
			t.Fatalf("VisitObject accepted %q (CheckObject: %v)", b, want)
		case err == ErrDuplicateKey && want == nil:
			t.Fatalf("VisitObject found a duplicate in %q, CheckObject none", b)
		case err != nil && want == nil && depth(b) <= testDepth:
			t.Fatalf("VisitObject refused %q: %v (CheckObject accepts)", b, err)
		case err != nil:
			return
		}
		obj, _, _ := ParseObject(b, true)
		if len(ms) != len(obj) {
			t.Fatalf("%q: visited %d members, built %d", b, len(ms), len(obj))
		}
		for _, m := range ms {
			dec := json.NewDecoder(bytes.NewReader(m.value))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil || dec.More() {
				t.Fatalf("%q: member %q value %q does not decode: %v", b, m.name, m.value, err)
			}
			if !reflect.DeepEqual(v, obj[m.name]) {
				t.Fatalf("%q: member %q is %#v, built %#v", b, m.name, v, obj[m.name])
			}
			if s, ok := String(m.value); ok != (m.value[0] == '"') || (ok && s != v) {
				t.Fatalf("%q: String(%s) = %q, %v", b, m.value, s, ok)
			}
		}
	})
}
