package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// flags is a subcommand's flag set whose flags fall back to environment
// variables: a flag given on the command line wins, then the variable,
// then the default.
type flags struct {
	*flag.FlagSet
	errs []error
}

func newFlags(name string, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &flags{FlagSet: fs}
}

func envUsage(usage, env string) string {
	if env == "" {
		return usage
	}
	return fmt.Sprintf("%s (env %s)", usage, env)
}

func (f *flags) string(name, env, def, usage string) *string {
	return f.String(name, fromEnv(f, env, def, func(v string) (string, error) { return v, nil }), envUsage(usage, env))
}

func (f *flags) int(name, env string, def int, usage string) *int {
	return f.Int(name, fromEnv(f, env, def, strconv.Atoi), envUsage(usage, env))
}

func (f *flags) duration(name, env string, def time.Duration, usage string) *time.Duration {
	return f.Duration(name, fromEnv(f, env, def, time.ParseDuration), envUsage(usage, env))
}

// fromEnv returns the default of a flag: the value of the variable env, if
// env names one that is set, else def. A value that does not parse gives
// the zero value and an error that parse reports.
func fromEnv[T any](f *flags, env string, def T, parseValue func(string) (T, error)) T {
	v, ok := os.LookupEnv(env)
	if !ok || env == "" {
		return def
	}
	x, err := parseValue(v)
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", env, err))
	}
	return x
}

// parse parses args and reports any environment variable that did not parse.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", f.Name(), f.Args())
	}
	return nil
}
