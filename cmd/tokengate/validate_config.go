package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/tokengate/tokengate/extauthz"
)

// errInvalidConfig makes validate-config exit 1 after printing the problems.
var errInvalidConfig = errors.New("invalid configuration")

// runValidateConfig checks an extauthz config file: it decodes it strictly
// and runs Validate, printing the file's name once and then every problem,
// decode problems (unknown fields, wrong types, duplicate keys) and
// Validate's alike, one a line with its path. It reads no key file and
// fetches nothing.
func runValidateConfig(_ context.Context, e env) error {
	if len(e.args) != 1 || strings.HasPrefix(e.args[0], "-") {
		fmt.Fprintln(e.stderr, "usage: tokengate validate-config FILE")
		return fmt.Errorf("%w: validate-config takes exactly one file", errUsage)
	}
	path := e.args[0]
	problems := configProblems(path)
	if len(problems) == 0 {
		fmt.Fprintf(e.stdout, "%s: ok\n", path)
		return nil
	}
	noun := "problems"
	if len(problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(e.stdout, "%s: %d %s\n", path, len(problems), noun)
	for _, p := range problems {
		fmt.Fprintf(e.stdout, "  %s\n", p)
	}
	return fmt.Errorf("%s: %w", path, errInvalidConfig)
}

// configProblems lists what is wrong with the file at path, one line a
// problem, none naming the file.
func configProblems(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return []string{"cannot read: " + err.Error()}
	}
	cfg, err := extauthz.ParseConfig(data)
	var lines []string
	decoded := map[string]bool{} // paths with a decode problem
	if err != nil {
		lines = strings.Split(err.Error(), "\n")
		var de *extauthz.DecodeError
		if !errors.As(err, &de) || de.Syntax {
			return lines // nothing decoded: Validate would only add noise
		}
		for _, l := range lines {
			if p, _, ok := strings.Cut(l, ": "); ok {
				decoded[p] = true
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		for _, l := range strings.Split(err.Error(), "\n") {
			// A value that did not decode is left out, so Validate may call
			// it missing: its decode problem already says what is wrong.
			if p, _, ok := strings.Cut(l, ": "); ok && decoded[p] {
				continue
			}
			lines = append(lines, l)
		}
	}
	return lines
}
