package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/pgaudit"
	"github.com/resolutionflow/ledgerd/audit/sqliteaudit"
	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/audit/verify/pgverify"
	"github.com/resolutionflow/ledgerd/audit/verify/sqliteverify"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/pgidem"
	"github.com/resolutionflow/ledgerd/idempotency/sqliteidem"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/migrations"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/shred"
	"github.com/resolutionflow/ledgerd/shred/pgkeys"
	"github.com/resolutionflow/ledgerd/shred/sqlitekeys"
)

// backend is the storage the ledger runs on: the event log, the read
// models, the idempotency keys and the leadership leases.
type backend struct {
	// events is the log as readers see it: opened (shred.Store) once
	// withKeys has given it the master key, the stored bytes before.
	events shred.Log
	// raw is the log as stored, for what checks hashes or builds the
	// Merkle tree.
	raw shred.Log
	// keys is the table of data keys.
	keys   shred.KeyStore
	views  projections.Store
	idem   idempotency.Store
	audit  audit.Store
	locker leader.Locker
	checks []httpapi.Check
	// sealed returns the read models and the idempotency keys that keep
	// notes sealed by keys (withKeys).
	sealed func(keys *shred.Keyring) (projections.Store, idempotency.Store)
	// pool is the PostgreSQL pool; nil for the embedded store.
	pool *pgxpool.Pool
	// verify checks the stored log (`ledgerd verify`).
	verify func(ctx context.Context, opts verify.Options) (verify.Result, error)
	close  func()
}

// openPostgres connects to PostgreSQL and applies pending migrations, if
// there are any: the runtime role, which may not change the schema, starts
// when it is up to date and is told to run `ledgerd migrate` otherwise.
func openPostgres(ctx context.Context, url string, maxConns int, logger *slog.Logger) (*backend, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	leases := pgleader.Config{}
	// A process frozen inside a transaction must not hold its locks past
	// its lease (pgleader.Config.IdleTransactionTimeout). A URL may set a
	// shorter timeout, never a longer one.
	idle := leases.IdleTransactionTimeout()
	if v, ok := cfg.ConnConfig.RuntimeParams[idleTimeoutParam]; !ok || !shorterThan(v, idle) {
		cfg.ConnConfig.RuntimeParams[idleTimeoutParam] = strconv.FormatInt(idle.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := migrations.PostgresPending(ctx, pool); err != nil {
		pool.Close()
		if errors.Is(err, migrations.ErrNotPermitted) {
			return nil, fmt.Errorf("this database role may not apply the pending migrations: run `ledgerd migrate` with the owner's --database-url first: %w", err)
		}
		return nil, err
	}
	locker, err := pgleader.New(pool, logger, leases)
	if err != nil {
		pool.Close()
		return nil, err
	}
	store, views := pgstore.New(pool), pgviews.New(pool)
	return &backend{
		events: store,
		raw:    store,
		keys:   pgkeys.New(pool),
		views:  views,
		sealed: func(keys *shred.Keyring) (projections.Store, idempotency.Store) {
			return views.WithKeys(keys), pgidem.New(pool, idempotency.SealedBy(keys))
		},
		idem:   pgidem.New(pool),
		audit:  pgaudit.New(pool),
		locker: locker,
		checks: []httpapi.Check{
			{Name: "database", Func: pool.Ping},
			{Name: "migrations", Func: func(ctx context.Context) error { return migrations.CheckPostgres(ctx, pool) }},
		},
		pool: pool,
		verify: func(ctx context.Context, opts verify.Options) (verify.Result, error) {
			return pgverify.Verify(ctx, pool, opts)
		},
		close: pool.Close,
	}, nil
}

// sqliteFile is the name of the embedded database in the data directory.
const sqliteFile = "ledger.db"

// openSQLite opens the embedded store, a SQLite file in dataDir (made
// private first: secureDataDir), and applies pending migrations. Events, read
// models and idempotency keys share the file and its one write connection;
// leadership leases are local to the process, and the read-model
// checkpoint's compare-and-set keeps a second process on the same file
// harmless.
func openSQLite(ctx context.Context, dataDir string, logger *slog.Logger) (*backend, error) {
	if err := secureDataDir(dataDir, logger); err != nil {
		return nil, err
	}
	store, err := sqlitestore.Open(ctx, filepath.Join(dataDir, sqliteFile))
	if err != nil {
		return nil, err
	}
	views := sqliteviews.New(store.DB(), store.ReadDB())
	return &backend{
		events: store,
		raw:    store,
		keys:   sqlitekeys.New(store.DB()),
		views:  views,
		sealed: func(keys *shred.Keyring) (projections.Store, idempotency.Store) {
			return views.WithKeys(keys), sqliteidem.New(store.DB(), idempotency.SealedBy(keys))
		},
		idem:   sqliteidem.New(store.DB()),
		audit:  sqliteaudit.New(store.DB(), store.ReadDB()),
		locker: leader.NewLocal(),
		// Opening applied the migrations; reading the head of the log
		// shows the file is there and readable.
		checks: []httpapi.Check{{Name: "database", Func: func(ctx context.Context) error {
			_, err := store.Head(ctx)
			return err
		}}},
		verify: func(ctx context.Context, opts verify.Options) (verify.Result, error) {
			return sqliteverify.Verify(ctx, store.ReadDB(), opts)
		},
		close: func() {
			if err := store.Close(); err != nil {
				logger.Error("close the embedded database", "err", err)
			}
		},
	}, nil
}

// idleTimeoutParam is PostgreSQL's setting that ends a session left idle
// inside a transaction.
const idleTimeoutParam = "idle_in_transaction_session_timeout"

// shorterThan reports whether v, a timeout in milliseconds as PostgreSQL
// takes it, is positive and shorter than d; 0 means no timeout.
func shorterThan(v string, d time.Duration) bool {
	ms, err := strconv.ParseInt(v, 10, 64)
	return err == nil && ms > 0 && time.Duration(ms)*time.Millisecond < d
}

// withKeys makes b's readers see the log opened by keys, and its read
// models and idempotency keys keep notes sealed by keys.
func (b *backend) withKeys(keys *shred.Keyring) {
	b.events = shred.NewOpenedLog(b.raw, keys)
	b.views, b.idem = b.sealed(keys)
}
