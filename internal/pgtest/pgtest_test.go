package pgtest_test

import (
	"database/sql"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, dbURL string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatalf("open %s: %v", dbURL, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func databaseName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestNewDatabaseIsMigrated(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	if !strings.HasPrefix(dbURL, "postgres://") || !strings.Contains(dbURL, "sslmode=disable") {
		t.Errorf("URL = %q, want postgres://...?sslmode=disable", dbURL)
	}
	var n int
	if err := open(t, dbURL).QueryRowContext(t.Context(), "SELECT count(*) FROM events").Scan(&n); err != nil {
		t.Fatalf("query events: %v", err)
	}
	if n != 0 {
		t.Errorf("events has %d rows in a new database, want 0", n)
	}
}

func TestNewEmptyDatabaseIsNotMigrated(t *testing.T) {
	t.Parallel()
	var events sql.NullString
	if err := open(t, pgtest.NewEmptyDatabase(t)).QueryRowContext(t.Context(), "SELECT to_regclass('events')::text").Scan(&events); err != nil {
		t.Fatalf("look up events: %v", err)
	}
	if events.Valid {
		t.Errorf("an empty database has the table %s", events.String)
	}
}

func TestParallelTestsGetDifferentDatabases(t *testing.T) {
	var (
		mu    sync.Mutex
		names = map[string]bool{}
	)
	t.Run("group", func(t *testing.T) {
		for _, sub := range []string{"a", "b"} {
			t.Run(sub, func(t *testing.T) {
				t.Parallel()
				db := open(t, pgtest.NewDatabase(t))
				var name string
				if err := db.QueryRowContext(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
					t.Fatalf("current database: %v", err)
				}
				// Data written here must not show up in the other database.
				if _, err := db.ExecContext(t.Context(), "CREATE TABLE only_"+sub+" ()"); err != nil {
					t.Fatalf("create table: %v", err)
				}
				var tables int
				if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'only\\_%'").Scan(&tables); err != nil {
					t.Fatalf("count tables: %v", err)
				}
				if tables != 1 {
					t.Errorf("database %s has %d only_* tables, want 1", name, tables)
				}
				mu.Lock()
				names[name] = true
				mu.Unlock()
			})
		}
	})
	if len(names) != 2 {
		t.Errorf("two parallel tests got databases %v, want two different ones", names)
	}
}

func TestDatabaseIsDroppedAfterCleanup(t *testing.T) {
	admin := open(t, pgtest.AdminURL(t))
	exists := func(name string) bool {
		t.Helper()
		var ok bool
		if err := admin.QueryRowContext(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&ok); err != nil {
			t.Fatalf("look up database %s: %v", name, err)
		}
		return ok
	}

	var name string
	t.Run("sub", func(t *testing.T) {
		dbURL := pgtest.NewDatabase(t)
		name = databaseName(t, dbURL)
		// An open connection must not keep the database from being dropped.
		if err := open(t, dbURL).PingContext(t.Context()); err != nil {
			t.Fatalf("ping: %v", err)
		}
		if !exists(name) {
			t.Fatalf("database %s does not exist during the test", name)
		}
	})
	if name == "" {
		t.Fatal("subtest made no database")
	}
	if exists(name) {
		t.Errorf("database %s still exists after its test's cleanup", name)
	}
}

// TestPool_SharesTheDatabase opens a pool on a new database and a second,
// configured one on the same database, and checks their sizes, the
// configuration, and that both see the same data.
func TestPool_SharesTheDatabase(t *testing.T) {
	t.Parallel()
	first := pgtest.NewPool(t, 3)
	url := first.Config().ConnString()
	second := pgtest.Pool(t, url, 0, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["application_name"] = "second"
	})
	if got := first.Config().MaxConns; got != 3 {
		t.Errorf("first pool has up to %d connections, want 3", got)
	}
	def, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if got := second.Config().MaxConns; got != def.MaxConns {
		t.Errorf("second pool has up to %d connections, want pgx's default %d", got, def.MaxConns)
	}
	if _, err := first.Exec(t.Context(), "CREATE TABLE shared ()"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var table, app sql.NullString
	err = second.QueryRow(t.Context(), "SELECT to_regclass('shared')::text, current_setting('application_name')").Scan(&table, &app)
	if err != nil {
		t.Fatalf("query through the second pool: %v", err)
	}
	if !table.Valid {
		t.Error("the second pool does not see the table the first made")
	}
	if app.String != "second" {
		t.Errorf("application_name = %q, want the configured %q", app.String, "second")
	}
}

// TestPool_ClosedAfterTheTest opens a pool in a subtest on a database that
// outlives it, and checks that the pool is closed once the subtest has
// finished.
func TestPool_ClosedAfterTheTest(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	var pool *pgxpool.Pool
	t.Run("sub", func(t *testing.T) {
		pool = pgtest.Pool(t, url, 1)
		if err := pool.Ping(t.Context()); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})
	if pool == nil {
		t.Fatal("subtest opened no pool")
	}
	if err := pool.Ping(t.Context()); err == nil {
		t.Error("the pool still answers after its test's cleanup")
	}
}

func TestServer_StopOrCrashAndStartKeepData(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartServer(t)
	dbURL := srv.NewDatabase(t)
	db := open(t, dbURL)
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatalf("write: %v", err)
	}

	for name, stop := range map[string]func(testing.TB){"Stop": srv.Stop, "Crash": srv.Crash} {
		stop(t)
		if err := db.PingContext(t.Context()); err == nil {
			t.Fatalf("the server answers a ping after %s", name)
		}
		srv.Start(t)
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT n FROM kept").Scan(&n); err != nil || n != 7 {
			t.Fatalf("after %s and Start, on the same URL: n = %d, %v; want 7", name, n, err)
		}
	}
}
