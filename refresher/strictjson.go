package refresher

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// checkJSONKeys walks a JSON body before it is decoded and refuses what
// Go's decoder would silently resolve: a key given twice in one object (the
// decoder keeps the last), two keys of one object that differ only in case
// (the decoder matches struct fields case-insensitively, and a consumer of
// the claims may too), at any depth, claims included. When fields is not
// nil, the top level is an object whose keys must be among fields, spelled
// exactly. Errors name the field by its path (claims.org.teams[1].id).
//
// The body has already been size-limited (Config.MaxBodyBytes), which also
// bounds its depth.
func checkJSONKeys(body []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if fields != nil && tok != json.Delim('{') {
		return invalidRequest("body: must be a JSON object")
	}
	if err := walkJSON(dec, tok, "", fields); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidRequest("body: trailing data after the JSON value")
	}
	return nil
}

// walkJSON checks the value that starts with tok (already read) at path.
func walkJSON(dec *json.Decoder, tok json.Token, path string, fields []string) error {
	switch tok {
	case json.Delim('{'):
		seen := map[string]string{} // folded key → key as given
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return syntaxError(err)
			}
			key, _ := t.(string)
			at := joinPath(path, key)
			if first, dup := seen[foldKey(key)]; dup {
				if first == key {
					return invalidRequest("%s: given more than once", at)
				}
				return invalidRequest("%s: differs from %q only in case; keys must be distinct", at, first)
			}
			seen[foldKey(key)] = key
			if fields != nil && !contains(fields, key) {
				for _, f := range fields {
					if foldKey(f) == foldKey(key) {
						return invalidRequest("%s: unknown field (names are case-sensitive: %s)", at, f)
					}
				}
				return invalidRequest("%s: unknown field", at)
			}
			v, err := dec.Token()
			if err != nil {
				return syntaxError(err)
			}
			if err := walkJSON(dec, v, at, nil); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return syntaxError(err)
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			v, err := dec.Token()
			if err != nil {
				return syntaxError(err)
			}
			if err := walkJSON(dec, v, path+"["+strconv.Itoa(i)+"]", nil); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return syntaxError(err)
	}
	return nil
}

// foldKey is the key as a case-insensitive matcher sees it: simple Unicode
// case folding, so "SUB", "Sub" and "ſub" (long s) all collide with "sub",
// as they do in encoding/json.
func foldKey(k string) string { return strings.ToLower(strings.ToUpper(k)) }

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// syntaxError maps a tokenizer error to the 400 answer (nil stays nil).
func syntaxError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalidRequest("body: malformed JSON (unexpected end)")
	}
	return jsonError(err)
}
