package extauthz

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Forward-auth copies only decisionHeaders from the request: every header
// the decision reads (request.header("…") anywhere in the package) must be
// listed, under its canonical name, or forward-auth would silently not see
// it.
func TestDecisionHeadersCoverEveryRead(t *testing.T) {
	t.Parallel()
	var listed []string
	for _, n := range decisionHeaders {
		if n.lower != strings.ToLower(n.lower) || n.canonical != http.CanonicalHeaderKey(n.lower) {
			t.Errorf("decisionHeaders entry %+v: lower or canonical name wrong", n)
		}
		listed = append(listed, n.lower)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	read := regexp.MustCompile(`\.header\("([^"]+)"\)`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range read.FindAllStringSubmatch(string(src), -1) {
			found++
			if !slices.Contains(listed, m[1]) {
				t.Errorf("%s reads header %q, which forward-auth does not copy (add it to decisionHeaders)", f, m[1])
			}
		}
	}
	if found < len(decisionHeaders) {
		t.Fatalf("found %d header reads, fewer than the %d listed: the pattern no longer matches the code", found, len(decisionHeaders))
	}
}
