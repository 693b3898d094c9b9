package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/projections"
)

// storageFlags choose and configure the backend: PostgreSQL when a
// database URL is given, the embedded SQLite file in the data directory
// otherwise.
type storageFlags struct {
	databaseURL *string
	maxConns    *int
	dataDir     *string
}

func addStorageFlags(f *flags) storageFlags {
	return storageFlags{
		databaseURL: f.string("database-url", "DATABASE_URL", "", "PostgreSQL URL; when empty, the embedded store in --data-dir is used"),
		maxConns:    f.int("database-max-conns", "LEDGER_DATABASE_MAX_CONNS", 32, "PostgreSQL connection pool size"),
		dataDir:     f.string("data-dir", "LEDGER_DATA_DIR", "./ledger-data", "directory of the embedded mode's data"),
	}
}

// embedded reports whether the backend is the embedded SQLite store.
func (s storageFlags) embedded() bool { return *s.databaseURL == "" }

func (s storageFlags) open(ctx context.Context, logger *slog.Logger) (*backend, error) {
	if s.embedded() {
		return openSQLite(ctx, *s.dataDir, logger)
	}
	return openPostgres(ctx, *s.databaseURL, *s.maxConns, logger)
}

func serve(ctx context.Context, args []string, stderr io.Writer, logger *slog.Logger) error {
	f := newFlags("serve", stderr)
	storage := addStorageFlags(f)
	addr := f.string("http-addr", "LEDGER_HTTP_ADDR", ":8080", "address the REST API listens on")
	secret := f.string("jwt-secret", "LEDGER_JWT_SECRET", "", "HS256 secret that signs bearer tokens")
	natsCfg := addNATSFlags(f)
	grace := f.duration("shutdown-timeout", "LEDGER_SHUTDOWN_TIMEOUT", 30*time.Second, "how long in-flight requests may take to finish on SIGTERM")
	if err := f.parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return errors.New("--jwt-secret or LEDGER_JWT_SECRET is required")
	}
	relayCfg, err := natsCfg.config()
	if err != nil {
		return err
	}

	b, err := storage.open(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()

	projector := projections.NewProjector(b.events, b.views, b.locker, b.events.Appended, logger)
	workers := []func(context.Context) error{projector.Run}
	checks := b.checks
	if *natsCfg.url != "" {
		r, nc, check, err := startRelay(*natsCfg.url, relayCfg, b, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		workers = append(workers, r.Run)
		checks = append(checks, check)
	}
	api, err := httpapi.New(httpapi.Config{
		Commands:    commands.NewHandler(b.events, projector),
		Queries:     b.views,
		Idempotency: b.idem,
		JWTSecret:   []byte(*secret),
		Checks:      checks,
		Logger:      logger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", *addr, err)
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var running sync.WaitGroup
	for _, work := range workers {
		running.Go(func() {
			if err := work(workCtx); err != nil {
				logger.Error("background worker stopped", "err", err)
			}
		})
	}
	defer func() {
		stopWork()
		running.Wait()
	}()

	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("ledgerd serving", "http", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", grace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down HTTP: %w", err)
	}
	logger.Info("ledgerd stopped")
	return nil
}
