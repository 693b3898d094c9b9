package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	_ "github.com/resolutionflow/ledgerd/eventstore/sqlitestore" // registers ledgerd_event_hash, which the SQLite migrations use

	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgres_ConcurrentStartsMigrateOnce runs the migrations from several
// "processes" at once on an empty database, as when several ledgerd start
// together, and checks that all succeed and the schema is complete.
func TestPostgres_ConcurrentStartsMigrateOnce(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	pool := pgtest.Pool(t, url, 10)
	ctx := context.Background()
	if err := migrations.CheckPostgres(ctx, pool); !errors.Is(err, migrations.ErrPending) {
		t.Fatalf("CheckPostgres on an empty database = %v, want ErrPending", err)
	}

	const starts = 4
	errs := make([]error, starts)
	var wg sync.WaitGroup
	for i := range starts {
		wg.Go(func() {
			p, err := pgxpool.New(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer p.Close()
			db := stdlib.OpenDBFromPool(p)
			defer db.Close()
			errs[i] = migrations.Postgres(ctx, db)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("start %d: %v", i, err)
		}
	}
	if err := migrations.CheckPostgres(ctx, pool); err != nil {
		t.Fatalf("CheckPostgres after migrating = %v, want nil", err)
	}
	var tables int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
		AND tablename IN ('events', 'checkpoints', 'handoffs', 'idempotency_keys')`).Scan(&tables)
	if err != nil || tables != 4 {
		t.Fatalf("ledger tables = %d, %v; want 4", tables, err)
	}
}

func TestSQLite_MigratesOnceAndAgain(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	ctx := context.Background()
	for run := range 2 {
		if err := migrations.SQLite(ctx, db); err != nil {
			t.Fatalf("migration run %d: %v", run, err)
		}
	}
	var tables int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table'
		AND name IN ('events', 'checkpoints', 'handoffs', 'idempotency_keys')`).Scan(&tables)
	if err != nil || tables != 4 {
		t.Fatalf("ledger tables = %d, %v; want 4", tables, err)
	}
}
