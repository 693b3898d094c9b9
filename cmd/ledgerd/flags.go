package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

func (f *flags) bool(name, env string, def bool, usage string) *bool {
	return f.Bool(name, fromEnv(f, env, def, strconv.ParseBool), envUsage(usage, env))
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

// valueOrFile is a setting given either as a value, --NAME (env ENV), or
// as the path of a file holding it, --NAME-file (env ENV_FILE), such as a
// Docker secret: a value on the command line can be read by every local
// user in /proc/<pid>/cmdline.
type valueOrFile struct {
	name, env   string
	value, file *string
}

func (f *flags) valueOrFile(name, env, usage string) valueOrFile {
	return valueOrFile{
		name:  name,
		env:   env,
		value: f.string(name, env, "", usage),
		file:  f.string(name+"-file", env+"_FILE", "", "file holding the value of --"+name+" (preferred: it stays off the command line)"),
	}
}

// given reports whether the value or its file is set.
func (v valueOrFile) given() bool { return *v.value != "" || *v.file != "" }

// source names where the value comes from, for error messages.
func (v valueOrFile) source() string {
	if *v.file != "" {
		return "--" + v.name + "-file " + *v.file
	}
	return "--" + v.name + " (" + v.env + ")"
}

// get returns the value, read from its file when one is named, or "" when
// neither is set. Giving both is an error.
func (v valueOrFile) get() (string, error) {
	switch {
	case *v.value != "" && *v.file != "":
		return "", fmt.Errorf("give --%s (%s) or --%s-file (%s_FILE), not both", v.name, v.env, v.name, v.env)
	case *v.file != "":
		value, err := readValueFile(*v.file)
		if err != nil {
			return "", fmt.Errorf("--%s-file (%s_FILE): %w", v.name, v.env, err)
		}
		return value, nil
	}
	return *v.value, nil
}

// maxValueFileSize bounds how much of a value file is read.
const maxValueFileSize = 4096

// readValueFile returns the content of a value file without its trailing
// newline. A file that is empty, or larger than maxValueFileSize, is
// refused.
func readValueFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxValueFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(raw) > maxValueFileSize {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxValueFileSize)
	}
	value := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
	if value == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return value, nil
}
