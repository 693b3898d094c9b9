package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/audit/sqliteaudit"
	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/sqliteidem"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/shred"
)

func TestREST_SQLite(t *testing.T) { runSuite(t, newSQLiteBackend) }

func TestClaimRace_SQLite(t *testing.T) { testClaimRace(t, newSQLiteBackend) }

func TestReadWait_SQLite(t *testing.T) { testReadWaitBounded(t, sqliteBackendWaiting) }

// newSQLiteBackend wires the embedded parts on a fresh SQLite file, as
// serve does without a database URL, with the projector running until the
// test ends.
func newSQLiteBackend(tb testing.TB) Backend {
	tb.Helper()
	return sqliteBackendWaiting(tb, testReadWait)
}

// sqliteBackendWaiting is newSQLiteBackend with reads that wait at most
// readWait for the read model.
func sqliteBackendWaiting(tb testing.TB, readWait time.Duration) Backend {
	tb.Helper()
	store := sqlitetest.Open(tb)
	// Serve's wiring: the personal data sealed, every reader opened.
	opened := shred.NewStore(store, testKeyring)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	views := sqliteviews.New(store.DB(), store.ReadDB()).WithKeys(testKeyring)
	projector := projections.NewProjector(opened, views, leader.NewLocal(), store.Appended, logger)
	stop := runInBackground(tb, projector.Run)

	m := metrics.New()
	return Backend{
		Log:      opened,
		Stored:   store,
		Tail:     store,
		FindText: func(tb testing.TB, text string) []string { return findTextSQLite(tb, store.DB(), text) },
		PendKey: func(tb testing.TB, owner idempotency.Owner, key, hash string) {
			tb.Helper()
			_, err := store.DB().ExecContext(context.Background(), `INSERT INTO idempotency_keys (account_id, user_id, key, request_hash) VALUES (?, ?, ?, ?)`,
				owner.Account.String(), owner.User.String(), key, hash)
			if err != nil {
				tb.Fatalf("store a pending key: %v", err)
			}
		},
		Commands:      commands.NewHandler(opened, nil, commands.WithMetrics(m), commands.WithKeyring(testKeyring)),
		Metrics:       m,
		Queries:       projections.CaughtUp(views, store, projector, readWait),
		StopProjector: stop,
		Audit:         sqliteaudit.New(store.DB(), store.ReadDB()),
		Idempotency:   sqliteidem.New(store.DB(), idempotency.SealedBy(testKeyring)),
		Checks: []httpapi.Check{{Name: "database", Func: func(ctx context.Context) error {
			_, err := store.Head(ctx)
			return err
		}}, httpapi.SkippedEventsCheck(views, projections.HandoffsProjector)},
		FailAppends: func(tb testing.TB) func() {
			tb.Helper()
			return failSQLiteAppends(tb, store)
		},
	}
}

// failSQLiteAppends makes the database reject every insert into events
// until the returned function is called.
func failSQLiteAppends(tb testing.TB, store *sqlitestore.Store) func() {
	tb.Helper()
	ctx := context.Background()
	_, err := store.DB().ExecContext(ctx, `
CREATE TRIGGER test_fail_append BEFORE INSERT ON events
BEGIN SELECT RAISE(ABORT, 'appends disabled by the test'); END`)
	if err != nil {
		tb.Fatalf("disable appends: %v", err)
	}
	return func() {
		if _, err := store.DB().ExecContext(ctx, `DROP TRIGGER test_fail_append`); err != nil {
			tb.Fatalf("enable appends: %v", err)
		}
	}
}
