package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/resolutionflow/ledgerd/bench"
)

// benchCommand is `ledgerd bench`: it measures the ledger on a scratch
// ledger of its own (a schema in --database-url's database, or the embedded
// store in a temporary directory), prints the figures, and removes what it
// made. Exit 0 when every figure was measured, 1 when one failed, 2 for a
// bad command line or a database that holds a ledger without --scratch-ok.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def, quick := bench.DefaultConfig(), bench.QuickConfig()
	f := newFlags("bench")
	databaseURL := f.valueOrFile("database-url", "DATABASE_URL", "PostgreSQL database to make the scratch schema in; when empty, the embedded mode runs in a temporary directory")
	scratchOK := f.bool("scratch-ok", "", false, "run even though the database holds a ledger (the benchmark still works in a schema of its own, but loads the server)")
	natsURL := f.string("nats-url", "NATS_URL", "", "NATS server the benchmark's relay publishes to, in a scratch stream; when empty, an embedded server in a temporary directory")
	auth := addNATSAuthFlags(f)
	restURL := f.string("url", "", "", "base URL of a running ledgerd (http://host:port) for the REST figures; when empty, one is started in this process on the scratch ledger")
	secretFlag := addSecretFlags(f)
	asJSON := f.bool("json", "", false, "print the report as JSON instead of a table")
	isQuick := f.bool("quick", "", false, "a run of seconds with small sizes (the defaults below become those of --quick), to check a setup, not to compare")
	duration := f.duration("duration", "", def.Duration, "how long each figure measured against its baseline runs (--quick: "+quick.Duration.String()+")")
	writers := f.string("writers", "", joinInts(def.Writers), "comma-separated numbers of concurrent appenders")
	clients := f.string("clients", "", joinInts(def.Clients), "comma-separated numbers of concurrent REST clients")
	claimers := f.int("claimers", "", def.Claimers, "clients that race to claim one handoff")
	rounds := f.int("race-rounds", "", def.RaceRounds, "rounds of the claim race (--quick: "+strconv.Itoa(quick.RaceRounds)+")")
	logEvents := f.int("log-events", "", int(def.LogEvents), "events in the log that is read and rebuilt (--quick: "+strconv.FormatInt(quick.LogEvents, 10)+")")
	lagEvents := f.int("lag-events", "", def.LagEvents, "events whose publish lag is measured (--quick: "+strconv.Itoa(quick.LagEvents)+")")
	growth := f.string("growth", "", joinInt64s(def.Growth), "comma-separated, increasing log sizes at which appends and reads are measured (--quick: "+joinInt64s(quick.Growth)+")")
	growthReads := f.int("growth-reads", "", def.GrowthReads, "reads of the queue and of a history at each growth size (--quick: "+strconv.Itoa(quick.GrowthReads)+")")
	catchUp := f.duration("catch-up-timeout", "", def.CatchUpTimeout, "longest wait for the projector and the relay to reach the head of the log")
	only := f.string("only", "", "", "comma-separated groups of figures to run, of "+strings.Join(bench.Groups, ", ")+"; empty: all")
	timeout := f.duration("timeout", "", time.Hour, "longest the whole run may take")
	if err := f.parse(args); err != nil {
		return err
	}
	cfg := def
	if *isQuick {
		cfg = quick
	}
	var parseErr error
	f.Visit(func(fl *flag.Flag) {
		var err error
		switch fl.Name {
		case "duration":
			cfg.Duration = *duration
		case "writers":
			cfg.Writers, err = parseInts(*writers)
		case "clients":
			cfg.Clients, err = parseInts(*clients)
		case "claimers":
			cfg.Claimers = *claimers
		case "race-rounds":
			cfg.RaceRounds = *rounds
		case "log-events":
			cfg.LogEvents = int64(*logEvents)
		case "lag-events":
			cfg.LagEvents = *lagEvents
		case "growth":
			var sizes []int
			sizes, err = parseInts(*growth)
			cfg.Growth = make([]int64, len(sizes))
			for i, n := range sizes {
				cfg.Growth[i] = int64(n)
			}
		case "growth-reads":
			cfg.GrowthReads = *growthReads
		case "catch-up-timeout":
			cfg.CatchUpTimeout = *catchUp
		}
		if err != nil && parseErr == nil {
			parseErr = usageErrorf("--%s: %v", fl.Name, err)
		}
	})
	if parseErr != nil {
		return parseErr
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if err := cfg.Validate(); err != nil {
		return usageErrorf("bench: %v", err)
	}
	if *timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %s", *timeout)
	}
	dbURL, err := databaseURL.get()
	if err != nil {
		return usageErrorf("%v", err)
	}
	natsOpts, err := auth.options(*natsURL)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if *restURL != "" {
		secret, err := givenSecret(secretFlag)
		if err != nil {
			return usageErrorf("%v", err)
		}
		if secret == "" {
			return usageErrorf("--url needs the running ledgerd's token secret: --jwt-secret-file (LEDGER_JWT_SECRET_FILE) or --jwt-secret (LEDGER_JWT_SECRET)")
		}
		cfg.REST = &bench.Remote{URL: strings.TrimSuffix(*restURL, "/"), JWTSecret: []byte(secret)}
	}
	// The workers log only what goes wrong; the report is the output.
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Logger = logger

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	target, err := bench.Open(ctx, bench.Options{DatabaseURL: dbURL, ScratchOK: *scratchOK, NATSURL: *natsURL, NATSOptions: natsOpts, Logger: logger})
	if errors.Is(err, bench.ErrHoldsLedger) {
		return usageErrorf("%v", err)
	}
	if err != nil {
		return err
	}
	report, runErr := bench.Run(ctx, target, cfg, stderr)
	target.Close()
	if runErr != nil && len(report.Figures) == 0 {
		return fmt.Errorf("bench: %w", runErr)
	}
	if *asJSON {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteTable(stdout)
	}
	if runErr != nil {
		return fmt.Errorf("bench: stopped after %d figures: %w", len(report.Figures), runErr)
	}
	return err
}

// parseInts parses a comma-separated list of whole numbers.
func parseInts(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(part), "_", ""))
		if err != nil {
			return nil, fmt.Errorf("%q is not a comma-separated list of whole numbers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}

func joinInt64s(xs []int64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(parts, ",")
}
