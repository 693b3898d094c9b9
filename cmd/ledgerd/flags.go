package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// flags is a subcommand's flag set whose flags fall back to environment
// variables: a flag given on the command line wins, then the variable,
// then the default. Its help, -h or --help, spells each flag with two
// dashes, with its variable and its built-in default.
type flags struct {
	*flag.FlagSet
	// env and defaults hold each flag's variable and built-in default
	// (not the variable's value, which may be a secret), for the help.
	env      map[string]string
	defaults map[string]string
	errs     []error
}

// newFlags returns the flag set of the subcommand name ("token",
// "projections rebuild"). Parsing prints nothing: parse returns errors,
// and the help as a *helpRequest.
func newFlags(name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flags{FlagSet: fs, env: map[string]string{}, defaults: map[string]string{}}
}

// register records a flag's variable and built-in default for the help.
func (f *flags) register(name, env, def string) {
	f.env[name] = env
	f.defaults[name] = def
}

func (f *flags) string(name, env, def, usage string) *string {
	f.register(name, env, strconv.Quote(def))
	return f.String(name, fromEnv(f, env, def, func(v string) (string, error) { return v, nil }), usage)
}

func (f *flags) int(name, env string, def int, usage string) *int {
	f.register(name, env, strconv.Itoa(def))
	return f.Int(name, fromEnv(f, env, def, strconv.Atoi), usage)
}

func (f *flags) bool(name, env string, def bool, usage string) *bool {
	f.register(name, env, strconv.FormatBool(def))
	return f.Bool(name, fromEnv(f, env, def, strconv.ParseBool), usage)
}

func (f *flags) duration(name, env string, def time.Duration, usage string) *time.Duration {
	f.register(name, env, def.String())
	return f.Duration(name, fromEnv(f, env, def, time.ParseDuration), usage)
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

// helpRequest is the error parse returns for -h or --help: the command
// prints Usage to standard output and exits 0.
type helpRequest struct{ Usage string }

func (h *helpRequest) Error() string { return "help requested" }

// parse parses args and reports any environment variable that did not
// parse. A flag that is unknown or whose value does not parse gives a
// one-line *usageError naming it.
func (f *flags) parse(args []string) error {
	err := f.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return &helpRequest{Usage: f.usage()}
	case err != nil:
		// The flag package spells flags with one dash.
		msg := strings.NewReplacer("for flag -", "for flag --", "not defined: -", "not defined: --").Replace(err.Error())
		return usageErrorf("%s (see ledgerd %s -h)", msg, f.Name())
	case len(f.errs) > 0:
		return f.errs[0]
	case f.NArg() > 0:
		return usageErrorf("%s: unexpected arguments %q", f.Name(), f.Args())
	}
	return nil
}

// usage is the help of the subcommand: each flag as --name TYPE, then its
// description, variable and built-in default.
func (f *flags) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: ledgerd %s [flags]\n\nflags:\n", f.Name())
	f.VisitAll(func(fl *flag.Flag) {
		typ, usage := flag.UnquoteUsage(fl)
		fmt.Fprintf(&b, "  --%s", fl.Name)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		fmt.Fprintf(&b, "\n      %s\n      ", usage)
		if env := f.env[fl.Name]; env != "" {
			fmt.Fprintf(&b, "env %s, ", env)
		}
		fmt.Fprintf(&b, "default %s\n", f.defaults[fl.Name])
	})
	return b.String()
}

// checkAddr refuses an address that is not host:port, naming its flag
// and variable.
func checkAddr(name, env, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	var addrErr *net.AddrError
	if errors.As(err, &addrErr) {
		err = errors.New(addrErr.Err)
	}
	if err != nil {
		return usageErrorf("--%s (%s) %q is not a host:port address: %v", name, env, addr, err)
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
