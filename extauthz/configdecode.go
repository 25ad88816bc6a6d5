package extauthz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// DecodeError is every problem strict decoding found in a config, each
// with its path ("providers[0]: unknown field \"audience\"",
// "cache.size: must be an integer, not a string"), in the order of the
// document's paths.
type DecodeError struct {
	Problems []error
	// Syntax is set when the document is not YAML at all: nothing could be
	// decoded, so nothing else can be checked.
	Syntax bool
}

func (e *DecodeError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

func (e *DecodeError) Unwrap() []error { return e.Problems }

// decodeProblems lists what strict decoding of data into a value of type t
// refuses: duplicate keys and YAML syntax (as the YAML parser reports them,
// with their line), then every unknown field and every value of the wrong
// type, walking the document against t. encoding/json stops at the first
// of those; an operator fixing a file wants them all at once.
func decodeProblems(data []byte, t reflect.Type) *DecodeError {
	de := &DecodeError{}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		de.Problems = append(de.Problems, yamlProblems(err)...)
		if js, err = yaml.YAMLToJSON(data); err != nil {
			de.Syntax = true
			return de
		}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		de.Problems = append(de.Problems, err)
		de.Syntax = true
		return de
	}
	walkConfig("", doc, t, &de.Problems)
	return de
}

// yamlProblems splits the YAML parser's "unmarshal errors:" list into one
// problem a line, without the library's prefixes.
func yamlProblems(err error) []error {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "unmarshal errors:\n"); ok {
		var out []error
		for _, line := range strings.Split(rest, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, errors.New(line))
			}
		}
		return out
	}
	return []error{errors.New(msg)}
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	rawMessage      = reflect.TypeFor[json.RawMessage]()
)

func fieldPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// walkConfig checks v (a document decoded with UseNumber) against t.
func walkConfig(path string, v any, t reflect.Type, errs *[]error) {
	if v == nil {
		return // null: the zero value
	}
	if t == rawMessage || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		checkValue(path, v, t, errs)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		walkConfig(path, v, t.Elem(), errs)
	case reflect.Interface:
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, wrongType(path, t, v))
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(mapKeys(m)) {
			f, ok := fields[k]
			if !ok { // encoding/json also matches names case-insensitively
				for name, ff := range fields {
					if strings.EqualFold(name, k) {
						f, ok = ff, true
						break
					}
				}
			}
			if !ok {
				if path == "" {
					*errs = append(*errs, fmt.Errorf("unknown field %q", k))
				} else {
					*errs = append(*errs, fmt.Errorf("%s: unknown field %q", path, k))
				}
				continue
			}
			walkConfig(fieldPath(path, k), m[k], f, errs)
		}
	case reflect.Slice, reflect.Array:
		s, ok := v.([]any)
		if !ok {
			*errs = append(*errs, wrongType(path, t, v))
			return
		}
		for i, e := range s {
			walkConfig(fmt.Sprintf("%s[%d]", path, i), e, t.Elem(), errs)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, wrongType(path, t, v))
			return
		}
		for _, k := range slices.Sorted(mapKeys(m)) {
			walkConfig(fieldPath(path, k), m[k], t.Elem(), errs)
		}
	case reflect.String:
		// The YAML decoder turns scalars into strings for string fields.
		switch v.(type) {
		case string, json.Number, bool:
		default:
			*errs = append(*errs, wrongType(path, t, v))
		}
	default:
		checkValue(path, v, t, errs)
	}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// jsonFields maps a struct's JSON names to their types (embedded structs
// flattened, "-" skipped).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// checkValue decodes one value into t the way the strict decoder would.
func checkValue(path string, v any, t reflect.Type, errs *[]error) {
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, reflect.New(t).Interface())
	}
	if err == nil {
		return
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && !reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		*errs = append(*errs, wrongType(path, t, v))
		return
	}
	*errs = append(*errs, fmt.Errorf("%s: %s", path, strings.ReplaceAll(err.Error(), "json: ", "")))
}

func wrongType(path string, t reflect.Type, v any) error {
	return fmt.Errorf("%s: must be %s, not %s", path, kindName(t), valueName(v))
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	default:
		return "a mapping"
	}
}

func valueName(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case json.Number:
		return "the number " + v.String()
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}
