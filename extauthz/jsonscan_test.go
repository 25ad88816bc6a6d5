package extauthz

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"
)

// checkJSONObjectStream is the reference for checkJSONObject: the same
// rules on encoding/json's token stream (what the parser replaced).
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

// FuzzJSONScan holds the parser to encoding/json: checkJSONObject accepts
// exactly what the token-stream check accepts, and parseClaims decodes
// what decodeClaims decodes, to the same value, refusing (strict) exactly
// what checkJSONObject refuses.
func FuzzJSONScan(f *testing.F) {
	for _, s := range jsonScanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxJSONDepth {
			// Nesting beyond encoding/json's limit: the token stream
			// accepts it, decoding (and so the parser) does not.
			return
		}
		got, want := checkJSONObject(b), checkJSONObjectStream(b)
		if (got == nil) != (want == nil) {
			t.Fatalf("checkJSONObject(%q) = %v, token stream: %v", b, got, want)
		}
		claims, strict, err := parseClaims(b)
		ref, refErr := decodeClaims(b)
		if (err == nil) != (refErr == nil) {
			// parseClaims may decode what decodeClaims does not only
			// when it also refuses it (strict, after the signature).
			if err != nil || refErr == nil || strict == nil {
				t.Fatalf("parseClaims(%q): %v, decodeClaims: %v", b, err, refErr)
			}
			return
		}
		if err != nil {
			return
		}
		if (strict == nil) != (want == nil) {
			t.Fatalf("parseClaims(%q) strict = %v, checkJSONObject: %v", b, strict, want)
		}
		if !reflect.DeepEqual(claims, ref) {
			t.Fatalf("parseClaims(%q) = %#v, decodeClaims: %#v", b, claims, ref)
		}
	})
}
