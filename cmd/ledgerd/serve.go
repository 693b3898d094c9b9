package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
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

// secret returns the token-signing secret: the flag's, or in the embedded
// mode the one kept in the data directory (made on first use).
func (s storageFlags) secret(flagValue string) (string, error) {
	switch {
	case flagValue != "":
		if err := checkSecretLength(flagValue, "--jwt-secret (LEDGER_JWT_SECRET)"); err != nil {
			return "", err
		}
		return flagValue, nil
	case s.embedded():
		return loadOrCreateSecret(*s.dataDir)
	}
	return "", errors.New("--jwt-secret or LEDGER_JWT_SECRET is required with PostgreSQL")
}

func serve(ctx context.Context, args []string, stderr io.Writer, logger *slog.Logger) error {
	f := newFlags("serve", stderr)
	storage := addStorageFlags(f)
	addr := f.string("http-addr", "LEDGER_HTTP_ADDR", ":8080", "address the REST API listens on")
	secretFlag := f.string("jwt-secret", "LEDGER_JWT_SECRET", "", "HS256 secret that signs bearer tokens (embedded mode: kept in --data-dir when empty)")
	natsFlags := addNATSFlags(f)
	grace := f.duration("shutdown-timeout", "LEDGER_SHUTDOWN_TIMEOUT", defaultShutdownTimeout, "longest a stop on SIGTERM takes; in-flight requests get nine tenths of it to finish")
	httpFlags := addHTTPFlags(f)
	if err := f.parse(args); err != nil {
		return err
	}
	limits, err := httpFlags.limits()
	if err != nil {
		return err
	}
	secret, err := storage.secret(*secretFlag)
	if err != nil {
		return err
	}
	relayCfg, err := natsFlags.config()
	if err != nil {
		return err
	}

	b, err := storage.open(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	ln, err := limits.listen(*addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	target, err := natsFlags.target(ctx, *storage.dataDir, logger)
	if err != nil {
		return err
	}
	defer target.stop()
	r, nc, relayCheck, err := startRelay(target, relayCfg, b, logger)
	if err != nil {
		return err
	}
	defer nc.Close()

	projector := projections.NewProjector(b.events, b.views, b.locker, b.events.Appended, logger)
	api, err := httpapi.New(httpapi.Config{
		Commands:    commands.NewHandler(b.events, nil),
		Queries:     projections.CaughtUp(b.views, b.events, projector),
		Idempotency: b.idem,
		JWTSecret:   []byte(secret),
		Checks:      append(b.checks, relayCheck),
		Logger:      logger,
	})
	if err != nil {
		return err
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var running sync.WaitGroup
	sweeps := func(ctx context.Context) error {
		return idempotency.RunSweeps(ctx, b.idem, idempotency.SweepInterval, logger)
	}
	for _, work := range []func(context.Context) error{projector.Run, r.Run, sweeps} {
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

	srv := newHTTPServer(api, limits, logger)
	served := make(chan error, 1)
	go func() { served <- srv.serve(ln) }()
	logger.Info("ledgerd serving", "http", ln.Addr().String(), "nats", target.url, "embedded_store", storage.embedded())
	if isTerminal(stderr) {
		printStartup(stderr, ln.Addr(), target, storage)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", grace.String())
	srv.shutdown(*grace)
	logger.Info("ledgerd stopped")
	return nil
}

// defaultShutdownTimeout is the longest a stop on SIGTERM takes unless
// --shutdown-timeout says otherwise.
const defaultShutdownTimeout = 30 * time.Second

// isTerminal reports whether w is a terminal, where a person reads; there
// the startup lines go with the JSON logs, which a log collector reads
// alone otherwise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// printStartup tells a person, in a few lines, where everything is.
func printStartup(w io.Writer, api net.Addr, target natsTarget, storage storageFlags) {
	host := api.String()
	if tcp, ok := api.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		host = net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
	}
	data := "PostgreSQL (--database-url)"
	tokenCmd := "ledgerd token --jwt-secret \"$LEDGER_JWT_SECRET\" --role engineer"
	if storage.embedded() {
		data = *storage.dataDir + " (SQLite, JetStream, token secret)"
		tokenCmd = "ledgerd token --data-dir " + *storage.dataDir + " --role engineer"
	}
	nats := target.url
	if target.embedded {
		nats += " (embedded, JetStream)"
	}
	fmt.Fprintf(w, "ledgerd is running\n  API:   http://%s\n  NATS:  %s\n  data:  %s\n  token: %s\n", host, nats, data, tokenCmd)
}
