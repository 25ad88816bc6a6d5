package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tokengate/tokengate/extauthz"
)

// errInvalidConfig makes validate-config exit 1 after printing the problems.
var errInvalidConfig = errors.New("invalid configuration")

// runValidateConfig checks an extauthz config file: it decodes it strictly
// and runs Validate, printing every problem with its path. It reads no key
// file and fetches nothing.
func runValidateConfig(_ context.Context, e env) error {
	if len(e.args) != 1 || strings.HasPrefix(e.args[0], "-") {
		fmt.Fprintln(e.stderr, "usage: tokengate validate-config FILE")
		return fmt.Errorf("%w: validate-config takes exactly one file", errUsage)
	}
	path := e.args[0]
	cfg, err := extauthz.LoadConfig(path)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(e.stdout, "%s: %s\n", path, line)
		}
		return fmt.Errorf("%s: %w", path, errInvalidConfig)
	}
	fmt.Fprintf(e.stdout, "%s: ok\n", path)
	return nil
}
