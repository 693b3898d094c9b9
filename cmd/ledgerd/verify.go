package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/resolutionflow/ledgerd/audit/verify"
)

// verifyLog runs `ledgerd verify`: it checks the whole stored log and
// exits 0 when it is intact, 1 naming the first alteration found when it
// is not (docs/audit-verify.md).
func verifyLog(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	f := newFlags("verify", stderr)
	storage := addStorageFlags(f)
	if err := f.parse(args); err != nil {
		return err
	}
	opts := verify.Options{}
	if isTerminal(stderr) {
		opts.Progress = progressLine(stderr, time.Now())
	}

	if storage.embedded() {
		// Opening would make an empty ledger, which would verify.
		if _, err := os.Stat(filepath.Join(*storage.dataDir, sqliteFile)); err != nil {
			return fmt.Errorf("no ledger in --data-dir %s: %w", *storage.dataDir, err)
		}
	}
	b, err := storage.open(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	res, err := b.verify(ctx, opts)
	if opts.Progress != nil {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "intact: %d events in %d streams\n", res.Events, res.Streams)
	return nil
}

// progressLine returns a progress callback that keeps one line on a
// terminal up to date: the events checked so far and the rate.
func progressLine(w io.Writer, start time.Time) func(int64) {
	return func(events int64) {
		rate := float64(events) / max(time.Since(start).Seconds(), 1e-3)
		fmt.Fprintf(w, "\rverify: %d events checked (%.0f/s)", events, rate)
	}
}
