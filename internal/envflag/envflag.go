// Package envflag lets every flag of a flag.FlagSet also be set from the
// environment, so the same binary is configured by flags locally and by env
// vars in a container. A flag given on the command line wins over its env var.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Name returns the environment variable for a flag: prefix + upper-cased name
// with '-' and '.' written as '_' ("TOKENGATE_", "grpc-listen" → "TOKENGATE_GRPC_LISTEN").
func Name(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable, if set. All bad env values are reported
// at once, each naming its variable.
func Parse(fs *flag.FlagSet, args []string, prefix string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := Name(prefix, f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// Usage writes a FlagSet's defaults followed by the env var of each flag, so
// `-h` documents both.
func Usage(fs *flag.FlagSet, prefix string) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage of %s:\n", fs.Name())
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  --%s (env %s)", f.Name, Name(prefix, f.Name))
			if f.DefValue != "" {
				fmt.Fprintf(out, " default %q", f.DefValue)
			}
			fmt.Fprintf(out, "\n      %s\n", f.Usage)
		})
	}
}
