// Command ledgerd runs the handoff ledger: a REST service whose park,
// escalate, claim and withdraw commands append immutable events, with read
// models built from the event log and every event relayed to NATS.
//
// Usage:
//
//	ledgerd serve                 run the service
//	ledgerd migrate               apply database migrations and exit
//	ledgerd token [flags]         print a signed token for development
//	ledgerd console [flags]       print a link that opens the web console signed in
//	ledgerd projections rebuild   rebuild the read models from the log
//	ledgerd tail [flags]          print events from NATS as they arrive
//	ledgerd replay [flags]        print a session's events, each with its state after it
//	ledgerd queue [flags]         print a team's queue from the read models
//	ledgerd history [flags]       print a session's handoffs from the read models
//	ledgerd verify [flags]        check that the stored log was not altered
//	ledgerd audit key|keygen      print the checkpoints' public key, or make a signing key
//	ledgerd bench [flags]         measure the ledger on a scratch ledger of its own
//	ledgerd version               print the version, commit and Go version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgerd:", err)
		os.Exit(exitCode(err))
	}
}

// usageError is a command line a command refuses: the process exits with
// status 2, as for a flag it does not know.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode is the exit status of a command that failed with err: 2 for a
// refused command line, 1 otherwise.
func exitCode(err error) int {
	var usage *usageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

const usage = `usage: ledgerd <command> [flags]

commands:
  serve                  run the service
  migrate                apply database migrations and exit
  token                  print a signed bearer token (development, scripts)
  console                print a link that opens the web console signed in (development)
  projections rebuild    rebuild the read models from the event log
  tail                   print ledger events from NATS as they arrive
  replay                 print a session's events, each with the session's state after it
  queue                  print a team's queue of open handoffs, read from the database
  history                print a session's handoffs, newest first, read from the database
  verify                 check that the stored log was not altered (exit 0 intact, 1 not)
  erase                  erase a session's personal data (its notes and client addresses) on request
  keys rotate            rewrap every data key with a new master key
  audit key              print the public key that verifies the Merkle checkpoints
  audit keygen           print a new checkpoint signing key (for --audit-key-file)
  bench                  measure appends, REST, the claim race, reads, rebuild, publish lag and growth on a scratch ledger
  version                print the version, the commit and the Go version

Run "ledgerd <command> -h" for the command's flags.
`

// run executes one ledgerd command; ctx ends on SIGINT or SIGTERM. A
// command's help (-h, --help) goes to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	logger := newLogger(stderr)
	slog.SetDefault(logger)
	err := runCommand(ctx, args[0], args[1:], stdout, stderr, logger)
	var help *helpRequest
	if errors.As(err, &help) {
		_, err = fmt.Fprint(stdout, help.Usage)
	}
	return err
}

func runCommand(ctx context.Context, cmd string, rest []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	switch cmd {
	case "serve":
		return serve(ctx, rest, stderr, logger)
	case "migrate":
		return migrate(ctx, rest, logger)
	case "token":
		return token(ctx, rest, stdout)
	case "console":
		return consoleCommand(ctx, rest, stdout, stderr)
	case "projections":
		if len(rest) == 0 || rest[0] != "rebuild" {
			return errors.New(`usage: ledgerd projections rebuild [flags]`)
		}
		return rebuild(ctx, rest[1:], stderr, logger)
	case "tail":
		return tailEvents(ctx, rest, stdout, logger)
	case "replay":
		return replay(ctx, rest, stdout, logger)
	case "queue":
		return printList(ctx, queueList, rest, stdout, logger)
	case "history":
		return printList(ctx, historyList, rest, stdout, logger)
	case "verify":
		return verifyLog(ctx, rest, stdout, stderr, logger)
	case "audit":
		return auditCommand(ctx, rest, stdout)
	case "erase":
		return eraseSession(ctx, rest, stdout, logger)
	case "keys":
		return keysCommand(ctx, rest, stdout, logger)
	case "bench":
		return benchCommand(ctx, rest, stdout, stderr)
	case "version":
		return printVersion(rest, stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// newLogger returns the JSON logger of the commands, which writes
// durations as Go spells them ("1.2s") rather than in nanoseconds.
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		},
	}))
}

// printVersion is `ledgerd version`: the module version, the commit it was
// built from and the Go version, from the binary's build information.
func printVersion(args []string, stdout io.Writer) error {
	if err := newFlags("version").parse(args); err != nil {
		return err
	}
	version, commit, goVersion := "unknown", "unknown", runtime.Version()
	if info, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = info.Main.Version, info.GoVersion
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			commit = rev
			if settings["vcs.modified"] == "true" {
				commit += " (modified)"
			}
		}
	}
	_, err := fmt.Fprintf(stdout, "ledgerd %s\ncommit %s\n%s\n", version, commit, goVersion)
	return err
}
