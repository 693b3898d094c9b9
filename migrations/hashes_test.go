package migrations_test

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/eventstore/storetest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/migrations"
)

// The last migrations before the ones that give events their hashes.
const (
	postgresBeforeHashes = 10
	sqliteBeforeHashes   = 7
)

// oldEvent is an event as the ledger wrote it before events had hashes.
type oldEvent struct {
	stream   string
	version  int64
	data     string
	metadata string
}

// oldEvents interleaves three streams, with data in unusual spellings.
var oldEvents = []oldEvent{
	{"backfill-a", 1, `{"intent": "escalate", "notes": "VPN ✓ \u00e9"}`, `{"actor_id":"a1","role":"engineer"}`},
	{"backfill-b", 1, `{"z":1,   "a" : [1.50, 2e3]}`, `{}`},
	{"backfill-a", 2, `{}`, `{"actor_id":"a2","request_id":"tab\there"}`},
	{"backfill-c", 1, `[]`, `{"role":"admin"}`},
	{"backfill-a", 3, `{"n": 3}`, `{}`},
	{"backfill-c", 2, `{"nested": {"ok": true, "none": null}}`, `{"role":"admin"}`},
}

// oldTime is when old event i was recorded: microseconds, not in UTC.
func oldTime(i int) time.Time {
	return time.Date(2026, 3, 4, 5, 6, 7, 123456000+1000*i, time.FixedZone("CET", 3600))
}

// TestEventHashes_BackfillPostgres writes events as the ledger did before
// event hashes, migrates, and checks that every old event got the hash the
// Go function computes from its row, chained in its stream, and that new
// appends continue the chains.
func TestEventHashes_BackfillPostgres(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t, pgtest.NewEmptyDatabase(t), 4)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.PostgresUpTo(ctx, db, postgresBeforeHashes); err != nil {
		t.Fatal(err)
	}
	for i, e := range oldEvents {
		_, err := db.ExecContext(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, recorded_at)
VALUES ($1, $2, $3, 'Old', $4, $5, $6)`, ulid.Make().String(), e.stream, e.version, e.data, e.metadata, oldTime(i))
		if err != nil {
			t.Fatalf("insert old event %d: %v", i, err)
		}
	}
	if err := migrations.Postgres(ctx, db); err != nil {
		t.Fatal(err)
	}
	checkBackfill(t, pgstore.New(pool))
}

// TestEventHashes_BackfillSQLite is TestEventHashes_BackfillPostgres on
// SQLite.
func TestEventHashes_BackfillSQLite(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	if err := migrations.SQLiteUpTo(ctx, db, sqliteBeforeHashes); err != nil {
		t.Fatal(err)
	}
	for i, e := range oldEvents {
		_, err := db.ExecContext(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, recorded_at)
VALUES (?, ?, ?, 'Old', ?, ?, ?)`, ulid.Make().String(), e.stream, e.version, e.data, e.metadata, oldTime(i).UTC().Format(sqlitestore.TimeLayout))
		if err != nil {
			t.Fatalf("insert old event %d: %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkBackfill(t, sqlitetest.OpenAt(t, path))
}

// checkBackfill checks the migrated log of oldEvents, then appends to it.
func checkBackfill(t *testing.T, s eventstore.Store) {
	log := storetest.ReadLog(t, s, 0)
	if len(log) != len(oldEvents) {
		t.Fatalf("%d events after the migration, want %d", len(log), len(oldEvents))
	}
	for i, e := range log {
		if e.Stream != oldEvents[i].stream || e.Version != oldEvents[i].version || !e.RecordedAt.Equal(oldTime(i)) {
			t.Errorf("event %d is %s version %d at %s, want %+v at %s", i, e.Stream, e.Version, e.RecordedAt, oldEvents[i], oldTime(i))
		}
		if e.Hash == (eventstore.Hash{}) {
			t.Errorf("event %d has no hash", i)
		}
	}
	storetest.AssertChained(t, log)

	last := log[4] // backfill-a version 3
	more, err := s.Append(t.Context(), "backfill-a", eventstore.Exact(3), []eventstore.NewEvent{{Type: "New", Data: json.RawMessage(`{}`)}})
	if err != nil {
		t.Fatalf("append after the migration: %v", err)
	}
	if more[0].PrevHash != last.Hash {
		t.Errorf("new event's previous hash %s, want the migrated event's %s", more[0].PrevHash, last.Hash)
	}
	storetest.AssertChained(t, storetest.ReadLog(t, s, 0))
}
