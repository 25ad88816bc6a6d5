// Package logcheck reads the log messages a package writes from its source,
// so a test can hold them to the project's message style (short lower-case
// prose, no trailing period, no snake_case event names) and to the list its
// documentation gives. Messages are the constant first argument of slog's
// Debug, Info, Warn and Error methods (the second for the …Context forms).
package logcheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Message is one log message and where it is written.
type Message struct {
	Text string
	Pos  string // file:line
}

var levels = map[string]int{
	"Debug": 0, "Info": 0, "Warn": 0, "Error": 0,
	"DebugContext": 1, "InfoContext": 1, "WarnContext": 1, "ErrorContext": 1,
}

// Messages returns the log messages written by the non-test Go files of
// dirs. A Debug, Info or Warn call whose message is not a string constant
// is an error: such a message cannot be documented or searched for. Error
// calls without a constant are skipped (http.Error, status.Error).
func Messages(dirs ...string) ([]Message, error) {
	var out []Message
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			return nil, err
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				return nil, err
			}
			var bad error
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || bad != nil {
					return bad == nil
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				i, ok := levels[sel.Sel.Name]
				if !ok || len(call.Args) <= i {
					return true
				}
				lit, ok := call.Args[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					if sel.Sel.Name != "Error" && i == 0 || i == 1 {
						bad = fmt.Errorf("%s: log message is not a string constant", fset.Position(call.Pos()))
					}
					return true
				}
				text, err := strconv.Unquote(lit.Value)
				if err != nil {
					bad = err
					return false
				}
				p := fset.Position(lit.Pos())
				out = append(out, Message{Text: text, Pos: fmt.Sprintf("%s:%d", p.Filename, p.Line)})
				return true
			})
			if bad != nil {
				return nil, bad
			}
		}
	}
	return out, nil
}

var snake = regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)+$`)

// StyleError says what is wrong with msg's style, or "" if nothing.
func StyleError(msg string) string {
	switch {
	case msg == "":
		return "empty"
	case snake.MatchString(msg):
		return "a snake_case event name, not prose"
	case msg[0] < 'a' || msg[0] > 'z':
		return "does not start with a lower-case letter"
	case strings.HasSuffix(msg, "."):
		return "ends with a period"
	}
	return ""
}

var backticked = regexp.MustCompile("`([^`]+)`")

// Documented reports whether doc names msg in backticks, whole or, for a
// long message, as its start followed by "…".
func Documented(doc, msg string) bool {
	for _, m := range backticked.FindAllStringSubmatch(doc, -1) {
		d := m[1]
		if d == msg {
			return true
		}
		if start, ok := strings.CutSuffix(d, "…"); ok && start != "" && strings.HasPrefix(msg, strings.TrimSpace(start)) {
			return true
		}
	}
	return false
}

// Check fails t for every message of dirs that breaks the style or is not
// in the section of docPath that starts at the heading section (e.g.
// "## Logs") and ends at the next heading of the same level.
func Check(t testing.TB, docPath, section string, dirs ...string) {
	t.Helper()
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	_, doc, ok := strings.Cut(string(raw), "\n"+section+"\n")
	if !ok {
		t.Fatalf("%s: no section %q", docPath, section)
	}
	level := section[:strings.IndexByte(section, ' ')+1]
	doc, _, _ = strings.Cut(doc, "\n"+level)
	msgs, err := Messages(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		t.Fatalf("no log messages found in %v", dirs)
	}
	for _, m := range msgs {
		if e := StyleError(m.Text); e != "" {
			t.Errorf("%s: log message %q: %s", m.Pos, m.Text, e)
		}
		if !Documented(doc, m.Text) {
			t.Errorf("%s: log message %q is not listed in %s %q", m.Pos, m.Text, docPath, section)
		}
	}
}
