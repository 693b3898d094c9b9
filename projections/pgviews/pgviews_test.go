package pgviews_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) projections.Store {
		tb.Helper()
		return pgviews.New(pgtest.NewPool(tb, 0))
	})
}

func TestProjector(t *testing.T) {
	storetest.RunProjector(t, func(tb testing.TB) storetest.Ledger {
		tb.Helper()
		pool := pgtest.NewPool(tb, 0)
		return storetest.Ledger{
			Log:   pgstore.New(pool),
			Views: pgviews.New(pool),
			Refuse: func(tb testing.TB, notes string) {
				tb.Helper()
				exec(tb, pool, `ALTER TABLE handoffs ADD CONSTRAINT test_refused CHECK (engineer_notes <> '`+notes+`')`)
			},
			BreakCheckpoints: func(tb testing.TB) func() {
				tb.Helper()
				exec(tb, pool, `
CREATE FUNCTION test_break() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'checkpoints broken by the test'; END $$;
CREATE TRIGGER test_break BEFORE INSERT OR UPDATE ON checkpoints FOR EACH ROW EXECUTE FUNCTION test_break()`)
				return func() { exec(tb, pool, `DROP TRIGGER test_break ON checkpoints; DROP FUNCTION test_break()`) }
			},
			Dump: func(tb testing.TB) string {
				tb.Helper()
				var dump string
				err := pool.QueryRow(tb.Context(), `SELECT coalesce(json_agg(h ORDER BY id), '[]')::text FROM handoffs h`).Scan(&dump)
				if err != nil {
					tb.Fatalf("dump handoffs: %v", err)
				}
				return dump
			},
		}
	})
}

func exec(tb testing.TB, pool *pgxpool.Pool, sql string) {
	tb.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}
