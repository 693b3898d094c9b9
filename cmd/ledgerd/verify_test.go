package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// tamperable is a ledger a test can alter as a database superuser would,
// with the immutability triggers out of the way.
type tamperable struct {
	log eventstore.Store
	// storage are the flags that point `ledgerd verify` at it.
	storage []string
	// tamper runs statements, with ? placeholders, past the triggers.
	tamper func(t *testing.T, stmts ...statement)
}

// statement is one SQL statement with its arguments.
type statement struct {
	sql  string
	args []any
}

func stmt(sql string, args ...any) statement { return statement{sql: sql, args: args} }

// postgresLedger is a ledger in a PostgreSQL database of its own; its
// tamper connects as the superuser pgtest gives and turns the triggers
// off for its session (session_replication_role = replica).
func postgresLedger(t *testing.T) tamperable {
	url := pgtest.NewDatabase(t)
	return tamperable{
		log:     pgstore.New(pgtest.Pool(t, url, 2)),
		storage: []string{"--database-url", url},
		tamper: func(t *testing.T, stmts ...statement) {
			t.Helper()
			ctx := t.Context()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatalf("connect as the superuser: %v", err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
				t.Fatalf("turn the triggers off: %v", err)
			}
			for _, s := range stmts {
				if _, err := conn.Exec(ctx, dollarPlaceholders(s.sql), s.args...); err != nil {
					t.Fatalf("tamper: %s: %v", s.sql, err)
				}
			}
		},
	}
}

// dollarPlaceholders numbers the ? placeholders of query as PostgreSQL's
// $1, $2, ...
func dollarPlaceholders(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// sqliteLedger is an embedded ledger in a data directory of its own; its
// tamper opens the file on a raw connection, drops every trigger, runs the
// statements and makes the triggers again, in one transaction.
func sqliteLedger(t *testing.T) tamperable {
	dir := t.TempDir()
	path := filepath.Join(dir, sqliteFile)
	return tamperable{
		log:     sqlitetest.OpenAt(t, path),
		storage: []string{"--data-dir", dir},
		tamper: func(t *testing.T, stmts ...statement) {
			t.Helper()
			ctx := t.Context()
			name := url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=busy_timeout(10000)&_txlock=immediate"}
			db, err := sql.Open("sqlite", name.String())
			if err != nil {
				t.Fatalf("open %s: %v", path, err)
			}
			defer db.Close()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			defer tx.Rollback() //nolint:errcheck // committed below
			rows, err := tx.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'trigger'`)
			if err != nil {
				t.Fatalf("read the triggers: %v", err)
			}
			triggers := map[string]string{}
			for rows.Next() {
				var name, def string
				if err := rows.Scan(&name, &def); err != nil {
					t.Fatalf("read the triggers: %v", err)
				}
				triggers[name] = def
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("read the triggers: %v", err)
			}
			exec := func(query string, args ...any) {
				t.Helper()
				if _, err := tx.ExecContext(ctx, query, args...); err != nil {
					t.Fatalf("tamper: %s: %v", query, err)
				}
			}
			for name := range triggers {
				exec(`DROP TRIGGER "` + name + `"`)
			}
			for _, s := range stmts {
				exec(s.sql, s.args...)
			}
			for _, def := range triggers {
				exec(def)
			}
			if err := tx.Commit(); err != nil {
				t.Fatalf("commit: %v", err)
			}
		},
	}
}

// sampleLog appends three streams whose events interleave in the log and
// returns them by stream, in version order.
func sampleLog(t *testing.T, log eventstore.Store) map[string][]eventstore.Event {
	t.Helper()
	streams := map[string][]eventstore.Event{}
	for i, stream := range []string{"a", "b", "a", "c", "b", "a", "c", "b"} {
		name := "session:" + stream
		recorded, err := log.Append(t.Context(), name, eventstore.Any, []eventstore.NewEvent{{
			Type: "Noted",
			Data: json.RawMessage(fmt.Sprintf(`{"n": %d,  "stream": %q}`, i, stream)),
		}})
		if err != nil {
			t.Fatalf("append to %s: %v", name, err)
		}
		streams[name] = append(streams[name], recorded[0])
	}
	return streams
}

// runVerify runs `ledgerd verify` with args and returns its error and
// what it printed on stdout.
func runVerify(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"verify"}, args...), &stdout, &stderr)
	return stdout.String(), err
}

// wantFailure checks that err is verify's report of an alteration at
// position in stream, which exits with status 1.
func wantFailure(t *testing.T, err error, position int64, stream string) {
	t.Helper()
	var failure *verify.Failure
	switch {
	case !errors.As(err, &failure):
		t.Fatalf("verify: %v, want an alteration found at position %d", err, position)
	case failure.Position != position || failure.Stream != stream:
		t.Fatalf("verify: %v\nwant the alteration at position %d, stream %q", err, position, stream)
	case exitCode(err) != 1:
		t.Fatalf("exit status %d, want 1", exitCode(err))
	}
	t.Logf("verify: %v", err)
}

func TestVerify_Postgres(t *testing.T) {
	t.Parallel()
	testVerify(t, postgresLedger)
}

func TestVerify_SQLite(t *testing.T) {
	t.Parallel()
	testVerify(t, sqliteLedger)
}

// testVerify alters a sample log in each way a database superuser could
// and checks that `ledgerd verify` finds each, at the first altered
// position, and passes the untouched log.
func testVerify(t *testing.T, open func(*testing.T) tamperable) {
	t.Run("Intact", func(t *testing.T) {
		t.Parallel()
		l := open(t)
		sampleLog(t, l.log)
		out, err := runVerify(t, l.storage...)
		if err != nil {
			t.Fatalf("verify an untouched log: %v", err)
		}
		if want := "intact: 8 events in 3 streams\n"; out != want {
			t.Errorf("verify printed %q, want %q", out, want)
		}
	})

	// Each case alters the log and names where verify must find it.
	cases := []struct {
		name   string
		tamper func(s map[string][]eventstore.Event) (stmts []statement, at eventstore.Event)
	}{
		{"EditData", func(s map[string][]eventstore.Event) ([]statement, eventstore.Event) {
			e := s["session:a"][1]
			return []statement{stmt(`UPDATE events SET data = '{"n": 99}' WHERE position = ?`, e.Position)}, e
		}},
		{"EditMetadata", func(s map[string][]eventstore.Event) ([]statement, eventstore.Event) {
			e := s["session:c"][0]
			return []statement{stmt(`UPDATE events SET metadata = '{"actor_id":"mallory"}' WHERE position = ?`, e.Position)}, e
		}},
		{"SwapPayloads", func(s map[string][]eventstore.Event) ([]statement, eventstore.Event) {
			a, b := s["session:a"][1], s["session:b"][1]
			return []statement{stmt(`UPDATE events SET data = CASE position WHEN ? THEN (SELECT data FROM events WHERE position = ?) ELSE (SELECT data FROM events WHERE position = ?) END WHERE position IN (?, ?)`,
				a.Position, b.Position, a.Position, a.Position, b.Position)}, a
		}},
		{"DeleteMiddleEvent", func(s map[string][]eventstore.Event) ([]statement, eventstore.Event) {
			return []statement{stmt(`DELETE FROM events WHERE position = ?`, s["session:a"][1].Position)}, s["session:a"][2]
		}},
		{"DeleteFirstEvent", func(s map[string][]eventstore.Event) ([]statement, eventstore.Event) {
			return []statement{stmt(`DELETE FROM events WHERE position = ?`, s["session:b"][0].Position)}, s["session:b"][1]
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := open(t)
			stmts, at := c.tamper(sampleLog(t, l.log))
			l.tamper(t, stmts...)
			_, err := runVerify(t, l.storage...)
			wantFailure(t, err, at.Position, at.Stream)
		})
	}
}
