package httpapi_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/audit/pgaudit"
	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/pgidem"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/migrations"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/shred"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestREST_Postgres(t *testing.T) { runSuite(t, newPostgresBackend) }

func TestClaimRace_Postgres(t *testing.T) { testClaimRace(t, newPostgresBackend) }

func TestReadWait_Postgres(t *testing.T) {
	testReadWaitBounded(t, func(tb testing.TB, readWait time.Duration) Backend {
		return postgresBackend(tb, postgresOptions{ReadWait: readWait})
	})
}

// poolSize leaves room for the 64 claimers of the race test and the
// projector's lease renewals.
const poolSize = 16

// newPostgresBackend wires the PostgreSQL parts on a fresh database, with
// the projector running until the test ends.
func newPostgresBackend(tb testing.TB) Backend { return postgresBackend(tb, postgresOptions{}) }

// postgresOptions vary a PostgreSQL backend; zero fields take defaults.
type postgresOptions struct {
	// Pool is on the database to wire (a fresh database's, of poolSize
	// connections).
	Pool *pgxpool.Pool
	// ReadWait bounds how long reads wait for the read model
	// (testReadWait).
	ReadWait time.Duration
}

// postgresBackend wires the PostgreSQL parts as serve does, with the
// projector running until the test ends.
func postgresBackend(tb testing.TB, o postgresOptions) Backend {
	tb.Helper()
	pool, readWait := o.Pool, o.ReadWait
	if pool == nil {
		pool = pgtest.NewPool(tb, poolSize)
	}
	if readWait == 0 {
		readWait = testReadWait
	}

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	stored := pgstore.New(pool)
	// Serve's wiring: the personal data sealed, every reader opened.
	events := shred.NewStore(stored, testKeyring)
	views := pgviews.New(pool).WithKeys(testKeyring)
	locker, err := pgleader.New(pool, logger, pgleader.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	projector := projections.NewProjector(events, views, locker, stored.Appended, logger)
	stop := runInBackground(tb, projector.Run)

	m := metrics.New()
	return Backend{
		Log:      events,
		Stored:   stored,
		Tail:     stored,
		FindText: func(tb testing.TB, text string) []string { return findTextPostgres(tb, pool, text) },
		PendKey: func(tb testing.TB, owner idempotency.Owner, key, hash string) {
			tb.Helper()
			_, err := pool.Exec(context.Background(), `INSERT INTO idempotency_keys (account_id, user_id, key, request_hash) VALUES ($1, $2, $3, $4)`,
				owner.Account, owner.User, key, hash)
			if err != nil {
				tb.Fatalf("store a pending key: %v", err)
			}
		},
		Commands:      commands.NewHandler(events, nil, commands.WithMetrics(m), commands.WithKeyring(testKeyring)),
		Metrics:       m,
		Queries:       projections.CaughtUp(views, stored, projector, readWait),
		StopProjector: stop,
		Idempotency:   pgidem.New(pool, idempotency.SealedBy(testKeyring)),
		Audit:         pgaudit.New(pool),
		Checks:        append(postgresChecks(pool), httpapi.SkippedEventsCheck(views, projections.HandoffsProjector)),
		FailAppends: func(tb testing.TB) func() {
			tb.Helper()
			return failPostgresAppends(tb, pool)
		},
	}
}

// runInBackground runs fn until the test ends or stop is called, and then
// checks that it stopped without an error.
func runInBackground(tb testing.TB, fn func(context.Context) error) (stop func()) {
	tb.Helper()
	return ledgertest.Go(context.Background(), tb, "background run", fn)
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
	return appendTrigger(tb, pool, `RAISE EXCEPTION 'appends disabled by the test';`)
}

// rivalPostgresAppends makes every append lose a race until the returned
// function is called: just before each insert into events, a rival event
// takes its stream version, so the insert fails on UNIQUE(stream, version)
// and the rival goes with the failed statement.
func rivalPostgresAppends(tb testing.TB, pool *pgxpool.Pool) func() {
	tb.Helper()
	return appendTrigger(tb, pool, `IF pg_trigger_depth() = 1 THEN
	INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
	VALUES (NEW.id || '-rival', NEW.stream, NEW.version, NEW.type, NEW.data, NEW.metadata, NEW.recorded_at, NEW.prev_hash, NEW.hash);
END IF;
RETURN NEW;`)
}

// appendTrigger runs body, PL/pgSQL, before each insert into events until
// the returned function is called.
func appendTrigger(tb testing.TB, pool *pgxpool.Pool, body string) func() {
	tb.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
CREATE FUNCTION test_append_trigger() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN `+body+` END $$;
CREATE TRIGGER test_append_trigger BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_append_trigger();`)
	if err != nil {
		tb.Fatalf("add a trigger on appends: %v", err)
	}
	return func() {
		if _, err := pool.Exec(ctx, `DROP TRIGGER test_append_trigger ON events; DROP FUNCTION test_append_trigger();`); err != nil {
			tb.Fatalf("drop the trigger on appends: %v", err)
		}
	}
}

// TestBusySession_Postgres: a command that loses the race for its session
// on every try answers 409 with Retry-After, appends nothing, and leaves
// its Idempotency-Key free, so that the retry it asks for runs.
func TestBusySession_Postgres(t *testing.T) {
	pool := pgtest.NewPool(t, poolSize)
	s := startServer(t, func(tb testing.TB) Backend { return postgresBackend(tb, postgresOptions{Pool: pool}) })
	alice := newTeam().user(domain.RoleEngineer)
	r := withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"escalate"}`), "k")

	restore := rivalPostgresAppends(t, pool)
	for range 2 {
		res := s.do(t, r, http.StatusConflict)
		if got := detail(t, res); got != "Session is busy, please retry" {
			t.Fatalf("detail %q", got)
		}
		if res.header.Get("Retry-After") != "1" || res.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("busy answer headers = %v, want Retry-After: 1 and no replay", res.header)
		}
	}
	restore()
	s.expectNoNewEvents(t, 0)

	if res := s.do(t, r, http.StatusCreated); res.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the retry after a busy answer was a replay")
	}
	s.expectNoNewEvents(t, 1)
}

// TestClientGone_Postgres: a client that goes away while its command waits
// inside the database is logged as a closed request (499), not as an
// internal error, and its Idempotency-Key stays free for the retry.
func TestClientGone_Postgres(t *testing.T) {
	pool := pgtest.NewPool(t, poolSize)
	s := startServer(t, func(tb testing.TB) Backend { return postgresBackend(tb, postgresOptions{Pool: pool}) })
	alice := newTeam().user(domain.RoleEngineer)
	r := withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"escalate"}`), "k")

	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `LOCK TABLE events IN EXCLUSIVE MODE`); err != nil {
		t.Fatalf("lock events: %v", err)
	}
	ctx, leave := context.WithCancel(t.Context())
	sent := make(chan error, 1)
	go func() {
		_, err := s.send(ctx, r)
		sent <- err
	}()
	ledgertest.WaitUntil(t, 20*time.Second, "the request waits for the events lock", func() bool {
		var waiting bool
		err := pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass)`).Scan(&waiting)
		return err == nil && waiting
	})
	leave()
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Fatalf("request of a client that left = %v, want context.Canceled", err)
	}
	ledgertest.WaitUntil(t, 20*time.Second, "the closed request is logged", func() bool {
		return strings.Contains(s.logs.String(), "status=499")
	})
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatalf("release the lock: %v", err)
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "level=INFO msg=\"client closed request\"") || strings.Contains(logs, "internal error") {
		t.Fatalf("logs = %s, want an INFO client closed request and no internal error", logs)
	}
	s.expectNoNewEvents(t, 0)
	if res := s.do(t, r, http.StatusCreated); res.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the retry after the client left was a replay")
	}
}
