package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/pgidem"
	"github.com/resolutionflow/ledgerd/idempotency/sqliteidem"
	"github.com/resolutionflow/ledgerd/internal/alternate"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/migrations"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/relay"
	"github.com/resolutionflow/ledgerd/shred"
)

// Log is the event log the benchmark appends to and reads: an event store
// that signals its appends and tells where its committed end is.
type Log = shred.Log

// ErrHoldsLedger is matched (errors.Is) by the error of OpenPostgres when
// the database already holds a ledger and Options.ScratchOK is not set.
var ErrHoldsLedger = errors.New("the database holds a ledger")

// ErrStreamTaken is matched (errors.Is) by the error of Open* when the NATS
// server already has a stream on the ledger's subjects: the benchmark's
// relay would publish its events into it.
var ErrStreamTaken = errors.New("the NATS server already has a stream on the ledger's subjects")

// Target is the system a benchmark runs against: a scratch ledger made for
// it (a schema of its own in a PostgreSQL database, or an embedded store in
// a temporary directory) and a NATS server. Close removes everything the
// benchmark made.
type Target struct {
	// Mode is "postgres" or "embedded".
	Mode string
	// Log is the log as serve's readers see it, opened by Keys (the
	// keyring of a master key made for the run); appends go to the store
	// as they are, sealed by whoever appends, as the command handler
	// seals them.
	Log    Log
	Keys   *shred.Keyring
	Views  projections.Store
	Idem   idempotency.Store
	Locker leader.Locker
	// NATS is the connection the relay publishes through; Stream is the
	// scratch JetStream stream it publishes to.
	NATS   *nats.Conn
	Stream string

	db      scratchDB
	cleanup []func()
}

// scratchDB runs plain statements on the scratch ledger's database: the
// baselines every figure is compared with, and its upkeep.
type scratchDB interface {
	// exec runs one statement with args.
	exec(ctx context.Context, query string, args ...any) error
	// countRows reads every row of the scan table and returns how many
	// there were.
	countRows(ctx context.Context) (int, error)
	// fillScan fills the scan table with n rows, in place of those it
	// had.
	fillScan(ctx context.Context, n int) error
	// readScanPage reads the first 100 rows of the scan table, as a plain
	// indexed read: the baseline of the growth reads.
	readScanPage(ctx context.Context) error
	// tidy vacuums and analyzes the read models, as autovacuum does in a
	// running ledger after a bulk change, so that reads after a fill see
	// the steady state and not the dead rows a rebuild leaves.
	tidy(ctx context.Context) error
}

// Options say where the ledger under test lives.
type Options struct {
	// DatabaseURL is the PostgreSQL database to make the scratch schema
	// in; empty for the embedded mode.
	DatabaseURL string
	// ScratchOK lets the benchmark run in a database that already holds a
	// ledger (its tables in the connection's search path): the benchmark
	// still works in a schema of its own, but loads the same server.
	ScratchOK bool
	// NATSURL is the NATS server to publish to; empty starts an embedded
	// one in a temporary directory. NATSOptions authenticate to it.
	NATSURL     string
	NATSOptions []nats.Option
	// Logger receives the workers' logs (slog.Default() when nil).
	Logger *slog.Logger
}

// Open makes the scratch ledger that opts describe.
func Open(ctx context.Context, opts Options) (_ *Target, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	t := &Target{Stream: "LEDGER_BENCH_" + ulid.Make().String()}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "ledgerd-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	t.onClose(func() { os.RemoveAll(dir) })
	if opts.DatabaseURL == "" {
		err = t.openSQLite(ctx, dir)
	} else {
		err = t.openPostgres(ctx, opts)
	}
	if err != nil {
		return nil, err
	}
	if err := t.connectNATS(ctx, opts, dir); err != nil {
		return nil, err
	}
	return t, nil
}

// onClose adds f to what Close runs, last added first.
func (t *Target) onClose(f func()) { t.cleanup = append(t.cleanup, f) }

// Close removes what the benchmark made: the scratch schema or directory,
// the scratch stream, and closes the connections.
func (t *Target) Close() {
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		t.cleanup[i]()
	}
	t.cleanup = nil
}

// cleanupTimeout bounds each step of Close.
const cleanupTimeout = 30 * time.Second

func (t *Target) openSQLite(ctx context.Context, dir string) error {
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "ledger.db"))
	if err != nil {
		return err
	}
	t.onClose(func() { store.Close() })
	if _, err := store.DB().ExecContext(ctx, alternate.BaselineTable); err != nil {
		return fmt.Errorf("create the baseline table: %w", err)
	}
	if _, err := store.DB().ExecContext(ctx, scanTable); err != nil {
		return fmt.Errorf("create the scan table: %w", err)
	}
	t.Mode = "embedded"
	if err := t.open(store); err != nil {
		return err
	}
	t.Views = sqliteviews.New(store.DB(), store.ReadDB()).WithKeys(t.Keys)
	t.Idem = sqliteidem.New(store.DB(), idempotency.SealedBy(t.Keys))
	t.Locker = leader.NewLocal()
	t.db = sqliteBaseline{write: store.DB(), read: store.ReadDB()}
	return nil
}

// open makes t.Log: raw opened by the keyring of a new master key, as
// serve opens its log.
func (t *Target) open(raw Log) error {
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		return err
	}
	t.Keys = keys
	t.Log = shred.NewOpenedLog(raw, t.Keys)
	return nil
}

// scanTable is the table read whole as the baseline of reading the log.
const scanTable = `CREATE TABLE baseline_scan (id bigint PRIMARY KEY, stream text NOT NULL, data jsonb NOT NULL)`

type sqliteBaseline struct{ write, read *sql.DB }

func (b sqliteBaseline) exec(ctx context.Context, query string, args ...any) error {
	_, err := b.write.ExecContext(ctx, query, args...)
	return err
}

func (b sqliteBaseline) tidy(ctx context.Context) error {
	_, err := b.write.ExecContext(ctx, `ANALYZE`)
	return err
}

func (b sqliteBaseline) readScanPage(ctx context.Context) error {
	rows, err := b.read.QueryContext(ctx, scanPageQuery)
	if err != nil {
		return err
	}
	defer rows.Close()
	_, err = countScanned(rows.Next, rows.Scan, rows.Err)
	return err
}

func (b sqliteBaseline) fillScan(ctx context.Context, n int) error {
	if _, err := b.write.ExecContext(ctx, `DELETE FROM baseline_scan`); err != nil {
		return err
	}
	_, err := b.write.ExecContext(ctx, `WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < ?)
INSERT INTO baseline_scan (id, stream, data) SELECT i, 'scan-' || i, ? FROM s`, n, alternate.BaselineEvent)
	return err
}

func (b sqliteBaseline) countRows(ctx context.Context) (int, error) {
	rows, err := b.read.QueryContext(ctx, scanQuery)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	return countScanned(rows.Next, rows.Scan, rows.Err)
}

// scanQuery reads the scan table whole; scanPageQuery its first 100 rows.
const (
	scanQuery     = `SELECT id, stream, data FROM baseline_scan ORDER BY id`
	scanPageQuery = scanQuery + ` LIMIT 100`
)

// countScanned decodes every row of a scanQuery, as a reader of the log
// decodes its events, and returns how many there were.
func countScanned(next func() bool, scan func(...any) error, done func() error) (int, error) {
	n := 0
	for next() {
		var id int64
		var stream string
		var data []byte
		if err := scan(&id, &stream, &data); err != nil {
			return n, err
		}
		n++
	}
	return n, done()
}

// schemaPrefix starts the name of every scratch schema.
const schemaPrefix = "ledgerd_bench_"

func (t *Target) openPostgres(ctx context.Context, opts Options) error {
	admin, err := pgxpool.New(ctx, opts.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	t.onClose(admin.Close)
	var holds bool
	if err := admin.QueryRow(ctx, `SELECT to_regclass('events') IS NOT NULL`).Scan(&holds); err != nil {
		return fmt.Errorf("look for a ledger in the database: %w", err)
	}
	if holds && !opts.ScratchOK {
		return fmt.Errorf("%w (table events in the search path): the benchmark would load its server; give --scratch-ok to run anyway, in a schema of its own", ErrHoldsLedger)
	}
	schema := schemaPrefix + strings.ToLower(ulid.Make().String())
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("create the scratch schema: %w", err)
	}
	t.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := admin.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			opts.Logger.Error("drop the scratch schema; drop it by hand", "schema", schema, "err", err)
		}
	})
	cfg, err := pgxpool.ParseConfig(opts.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = max(cfg.MaxConns, 80)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	// Closed before the schema is dropped.
	t.onClose(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	err = migrations.Postgres(ctx, db)
	db.Close()
	if err != nil {
		return err
	}
	for _, q := range []string{alternate.BaselineTable, scanTable} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("create the baseline tables: %w", err)
		}
	}
	locker, err := pgleader.New(pool, opts.Logger, pgleader.Config{})
	if err != nil {
		return err
	}
	t.Mode = "postgres"
	if err := t.open(pgstore.New(pool)); err != nil {
		return err
	}
	t.Views = pgviews.New(pool).WithKeys(t.Keys)
	t.Idem = pgidem.New(pool, idempotency.SealedBy(t.Keys))
	t.Locker = locker
	t.db = pgBaseline{pool}
	return nil
}

type pgBaseline struct{ pool *pgxpool.Pool }

func (b pgBaseline) exec(ctx context.Context, query string, args ...any) error {
	_, err := b.pool.Exec(ctx, query, args...)
	return err
}

func (b pgBaseline) tidy(ctx context.Context) error {
	_, err := b.pool.Exec(ctx, `VACUUM (ANALYZE) handoffs`)
	return err
}

func (b pgBaseline) readScanPage(ctx context.Context) error {
	rows, err := b.pool.Query(ctx, scanPageQuery)
	if err != nil {
		return err
	}
	defer rows.Close()
	_, err = countScanned(rows.Next, rows.Scan, rows.Err)
	return err
}

func (b pgBaseline) fillScan(ctx context.Context, n int) error {
	if _, err := b.pool.Exec(ctx, `DELETE FROM baseline_scan`); err != nil {
		return err
	}
	_, err := b.pool.Exec(ctx, `INSERT INTO baseline_scan (id, stream, data) SELECT i, 'scan-' || i, $2 FROM generate_series(1, $1::bigint) i`, n, alternate.BaselineEvent)
	return err
}

func (b pgBaseline) countRows(ctx context.Context) (int, error) {
	rows, err := b.pool.Query(ctx, scanQuery)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	return countScanned(rows.Next, rows.Scan, rows.Err)
}

// connectNATS connects to the NATS server of opts, or starts an embedded
// one in dir, and makes sure no stream takes the ledger's subjects there
// yet: the relay makes the scratch stream, removed by Close.
func (t *Target) connectNATS(ctx context.Context, opts Options, dir string) error {
	quiet := slog.New(atLeast{opts.Logger.Handler(), slog.LevelError})
	url, natsOpts := opts.NATSURL, opts.NATSOptions
	if url == "" {
		ns, err := embeddednats.Start(ctx, embeddednats.Config{DataDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:0", Logger: quiet})
		if err != nil {
			return err
		}
		t.onClose(ns.Shutdown)
		url, natsOpts = ns.ClientURL(), []nats.Option{ns.InProcess()}
	}
	nc, err := relay.Connect(url, "ledgerd bench", quiet, natsOpts...)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	t.onClose(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	lookCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(lookCtx, eventcodec.SubjectPrefix+".>")
	switch {
	case err == nil:
		return fmt.Errorf("%w (stream %s): give a NATS server or account of the benchmark's own", ErrStreamTaken, name)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("look for streams on the ledger's subjects: %w", err)
	}
	t.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := js.DeleteStream(ctx, t.Stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			opts.Logger.Error("delete the scratch stream; delete it by hand", "stream", t.Stream, "err", err)
		}
	})
	t.NATS = nc
	return nil
}

// atLeast passes on the records of h at level min or above: the NATS
// server's and client's warnings about a scratch setup (plain-text
// passwords of the embedded server, a disconnection at Close) are noise
// beside the report.
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (h atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h atLeast) WithAttrs(attrs []slog.Attr) slog.Handler {
	return atLeast{h.Handler.WithAttrs(attrs), h.min}
}

func (h atLeast) WithGroup(name string) slog.Handler {
	return atLeast{h.Handler.WithGroup(name), h.min}
}
