// Package docs_test keeps docs/security.md true: every test its attack
// table names exists where the table says.
package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ref is one `path:TestName` (or a bare `TestName` that follows one, which
// names another test in the same file).
var ref = regexp.MustCompile("`([A-Za-z0-9_./-]+\\.(?:go|mjs|ts))(?::([A-Za-z0-9_/]+))?`|`((?:Test|Fuzz|Benchmark)[A-Za-z0-9_/]*)`")

func TestSecurityTableNamesRealTests(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for n, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		file := ""
		for _, m := range ref.FindAllStringSubmatch(line, -1) {
			name := m[2]
			if m[1] != "" {
				file = m[1]
				if _, err := os.Stat(filepath.Join(root, file)); err != nil {
					t.Errorf("docs/security.md:%d: %s does not exist", n+1, file)
					continue
				}
			} else {
				name = m[3]
			}
			if name == "" {
				continue
			}
			if file == "" {
				t.Errorf("docs/security.md:%d: %s names no file", n+1, name)
				continue
			}
			name, _, _ = strings.Cut(name, "/") // a subtest: its parent must exist
			src, err := os.ReadFile(filepath.Join(root, file))
			if err != nil {
				continue // reported above
			}
			if !strings.Contains(string(src), "func "+name+"(") {
				t.Errorf("docs/security.md:%d: %s has no func %s", n+1, file, name)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Fatalf("only %d test references found in docs/security.md; has the table's format changed?", checked)
	}
}
