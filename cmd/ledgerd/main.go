// Command ledgerd runs the handoff ledger: a REST service whose park,
// escalate, claim and withdraw commands append immutable events, with read
// models built from the event log and every event relayed to NATS.
//
// Usage:
//
//	ledgerd serve                 run the service
//	ledgerd migrate               apply database migrations and exit
//	ledgerd token [flags]         print a signed token for development
//	ledgerd projections rebuild   rebuild the read models from the log
//	ledgerd tail [flags]          print events from NATS as they arrive
//	ledgerd audit key|keygen      print the checkpoints' public key, or make a signing key
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
		os.Exit(1)
	}
}

const usage = `usage: ledgerd <command> [flags]

commands:
  serve                  run the service
  migrate                apply database migrations and exit
  token                  print a signed bearer token (development, scripts)
  projections rebuild    rebuild the read models from the event log
  tail                   print ledger events from NATS as they arrive
  audit key              print the public key that verifies the Merkle checkpoints
  audit keygen           print a new checkpoint signing key (for --audit-key-file)

Run "ledgerd <command> -h" for the command's flags.
`

// run executes one ledgerd command; ctx ends on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	slog.SetDefault(logger)
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(ctx, rest, stderr, logger)
	case "migrate":
		return migrate(ctx, rest, stderr, logger)
	case "token":
		return token(ctx, rest, stdout, stderr)
	case "projections":
		if len(rest) == 0 || rest[0] != "rebuild" {
			return errors.New(`usage: ledgerd projections rebuild [flags]`)
		}
		return rebuild(ctx, rest[1:], stderr, logger)
	case "tail":
		return tailEvents(ctx, rest, stdout, stderr, logger)
	case "audit":
		return auditCommand(ctx, rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
