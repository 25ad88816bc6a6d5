package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// adminTokenFrom resolves --admin-token / --admin-token-file (the file is
// preferred in production: a flag value shows in the process list). Both
// services use it, so the refresher and extauthz read the secret the same way.
func adminTokenFrom(value, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", errors.New("admin-token: give --admin-token or --admin-token-file, not both")
	case file == "":
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin-token-file %s: empty", file)
	}
	return tok, nil
}
