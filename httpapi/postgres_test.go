package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/migrations"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestREST_Postgres(t *testing.T) { runSuite(t, newPostgresBackend) }

func TestClaimRace_Postgres(t *testing.T) { testClaimRace(t, newPostgresBackend) }

// poolSize leaves room for the 64 claimers of the race test and the
// projector's leadership connection.
const poolSize = 16

// newPostgresBackend wires the PostgreSQL parts on a fresh database, with
// the projector running until the test ends.
func newPostgresBackend(tb testing.TB) Backend {
	tb.Helper()
	return newPostgresBackendOfSize(tb, poolSize)
}

// newPostgresBackendOfSize is newPostgresBackend on a pool of maxConns
// connections.
func newPostgresBackendOfSize(tb testing.TB, maxConns int32) Backend {
	tb.Helper()
	pool := pgtest.NewPool(tb, maxConns)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	events := pgstore.New(pool)
	views := pgviews.New(pool)
	projector := projections.NewProjector(events, views, leader.NewPostgres(pool, logger), events.Appended, logger)
	runInBackground(tb, projector.Run)

	return Backend{
		Log:         events,
		Commands:    commands.NewHandler(events, nil),
		Queries:     projections.CaughtUp(views, events, projector),
		Idempotency: idempotency.NewPostgres(pool),
		Checks:      postgresChecks(pool),
		FailAppends: func(tb testing.TB) func() {
			tb.Helper()
			return failPostgresAppends(tb, pool)
		},
	}
}

// runInBackground runs fn until the test ends and then checks that it
// stopped without an error.
func runInBackground(tb testing.TB, fn func(context.Context) error) {
	tb.Helper()
	ledgertest.Go(context.Background(), tb, "background run", fn)
}

// postgresChecks are the readiness checks serve uses: the database answers
// and has every migration applied.
func postgresChecks(pool *pgxpool.Pool) []httpapi.Check {
	return []httpapi.Check{
		{Name: "database", Func: pool.Ping},
		{Name: "migrations", Func: func(ctx context.Context) error { return migrations.CheckPostgres(ctx, pool) }},
	}
}

// failPostgresAppends makes the database reject every insert into events
// until the returned function is called.
func failPostgresAppends(tb testing.TB, pool *pgxpool.Pool) func() {
	tb.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
CREATE FUNCTION test_fail_append() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'appends disabled by the test'; END $$;
CREATE TRIGGER test_fail_append BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_fail_append();`)
	if err != nil {
		tb.Fatalf("disable appends: %v", err)
	}
	return func() {
		if _, err := pool.Exec(ctx, `DROP TRIGGER test_fail_append ON events; DROP FUNCTION test_fail_append();`); err != nil {
			tb.Fatalf("enable appends: %v", err)
		}
	}
}
