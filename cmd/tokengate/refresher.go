package main

import (
	"context"
	"errors"
)

// runRefresher is being built; see the open issues.
func runRefresher(_ context.Context, _ env) error {
	return errors.New("not built yet")
}
