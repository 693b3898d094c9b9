package sqlitestore_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/eventstore/storetest"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// envKillChild, when set to a database path, makes the test binary the
// child process of TestAppend_SurvivesKill instead of running tests.
const envKillChild = "LEDGER_SQLITESTORE_KILL_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(envKillChild); path != "" {
		os.Exit(appendUntilKilled(path))
	}
	os.Exit(m.Run())
}

// TestConformance runs the conformance suite, and checks that its
// concurrent appends were written in batches, in some of which an append
// failed alone.
func TestConformance(t *testing.T) {
	var (
		mu     sync.Mutex
		stores []*sqlitestore.Store
	)
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		s := sqlitetest.Open(t)
		mu.Lock()
		defer mu.Unlock()
		stores = append(stores, s)
		return s
	})
	var batched, failed int64
	for _, s := range stores {
		b, f := s.Batched()
		batched, failed = batched+b, failed+f
	}
	t.Logf("%d appends written in batches, %d of them failed alone", batched, failed)
	if batched == 0 || failed == 0 {
		t.Errorf("%d appends written in batches, %d of them failed alone; want some of each", batched, failed)
	}
}

// TestConformance_TwoStoresOnOneFile runs the suite on two stores open on
// one file, as two processes would have them, taking turns call by call:
// their appends race through SQLite's file lock, not through one
// connection.
func TestConformance_TwoStoresOnOneFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		path := filepath.Join(t.TempDir(), "ledger.db")
		return &twoStores{stores: [2]eventstore.Store{sqlitetest.OpenAt(t, path), sqlitetest.OpenAt(t, path)}}
	})
}

type twoStores struct {
	stores [2]eventstore.Store
	calls  atomic.Uint64
}

func (p *twoStores) next() eventstore.Store { return p.stores[p.calls.Add(1)%2] }

func (p *twoStores) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	return p.next().Append(ctx, stream, expected, events, opts...)
}

func (p *twoStores) AppendQuick(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) error {
	return p.next().AppendQuick(ctx, stream, expected, events, opts...)
}

func (p *twoStores) AppendKeyed(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, readBack bool, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	return p.next().AppendKeyed(ctx, stream, expected, key, events, readBack, opts...)
}

func (p *twoStores) ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error) {
	return p.next().ReadStream(ctx, stream)
}

func (p *twoStores) ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error) {
	return p.next().ReadStreamAfter(ctx, stream, after)
}

func (p *twoStores) Snapshot(ctx context.Context, stream string) (eventstore.Snapshot, bool, error) {
	return p.next().Snapshot(ctx, stream)
}

func (p *twoStores) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	return p.next().SaveSnapshot(ctx, snap)
}

func (p *twoStores) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	return p.next().ReadAll(ctx, after, limit)
}

func (p *twoStores) ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error) {
	return p.next().ReadAccount(ctx, account, after, limit)
}

func TestConformance_Immutability(t *testing.T) {
	storetest.RunImmutability(t, func(t *testing.T) (eventstore.Store, storetest.Exec) {
		s := sqlitetest.Open(t)
		return s, func(ctx context.Context, query string) error {
			_, err := s.DB().ExecContext(ctx, query)
			return err
		}
	},
		// A REPLACE deletes the row it conflicts with, which must fire the
		// delete trigger.
		`INSERT OR REPLACE INTO events (id, stream, version, type, data, metadata, recorded_at)
		 SELECT id, stream, version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`,
		`REPLACE INTO events (id, stream, version, type, data, metadata, recorded_at)
		 SELECT id || 'x', stream, version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`)
}

// TestConformance_ImmutabilityOnAPlainConnection tampers through a
// connection opened without the store's settings, as the sqlite3 tool
// does: there recursive_triggers is off, so a REPLACE deletes the row it
// conflicts with without firing the delete trigger.
func TestConformance_ImmutabilityOnAPlainConnection(t *testing.T) {
	storetest.RunImmutability(t, func(t *testing.T) (eventstore.Store, storetest.Exec) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		s := sqlitetest.OpenAt(t, path)
		plain, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatalf("open a plain connection: %v", err)
		}
		t.Cleanup(func() { plain.Close() })
		if got := pragma(t, plain, "recursive_triggers"); got != "0" {
			t.Fatalf("plain connection: PRAGMA recursive_triggers = %s, want 0", got)
		}
		return s, func(ctx context.Context, query string) error {
			_, err := plain.ExecContext(ctx, query)
			return err
		}
	},
		`INSERT OR REPLACE INTO events (id, stream, version, type, data, metadata, recorded_at)
		 SELECT id, stream, version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`,
		`REPLACE INTO events (id, stream, version, type, data, metadata, recorded_at)
		 SELECT id || 'x', stream, version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`,
		`INSERT OR REPLACE INTO events (position, id, stream, version, type, data, metadata, recorded_at)
		 SELECT position, id || 'y', stream || 'y', version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`,
		`INSERT OR REPLACE INTO events (id, stream, version, type, data, metadata, recorded_at)
		 SELECT id, stream || 'z', version, 'Tampered', data, metadata, recorded_at FROM events WHERE version = 1`)
}

func pragma(tb testing.TB, db *sql.DB, name string) string {
	tb.Helper()
	var v string
	if err := db.QueryRowContext(tb.Context(), "PRAGMA "+name).Scan(&v); err != nil {
		tb.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestOpen_DurableSettings(t *testing.T) {
	s := sqlitetest.Open(t)
	want := map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "10000", "recursive_triggers": "1"}
	for handle, db := range map[string]*sql.DB{"DB": s.DB(), "ReadDB": s.ReadDB()} {
		for name, value := range want {
			if got := pragma(t, db, name); got != value {
				t.Errorf("%s: PRAGMA %s = %s, want %s", handle, name, got, value)
			}
		}
	}
	if got := pragma(t, s.ReadDB(), "query_only"); got != "1" {
		t.Errorf("ReadDB: PRAGMA query_only = %s, want 1", got)
	}
	if _, err := s.ReadDB().ExecContext(t.Context(), `INSERT INTO checkpoints (name, position) VALUES ('x', 1)`); err == nil {
		t.Error("ReadDB wrote to the database")
	}
}

func TestOpen_ReopenKeepsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	first, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	one := []eventstore.NewEvent{{Type: "Kept", Data: json.RawMessage(`{"kept": true}`)}}
	before, err := first.Append(t.Context(), "s", eventstore.NoStream, append(one, one...))
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s := sqlitetest.OpenAt(t, path)
	log, err := s.ReadAll(t.Context(), 0, 10)
	if err != nil {
		t.Fatalf("read all after reopening: %v", err)
	}
	if len(log) != 2 || log[0].ID != before[0].ID || log[1].ID != before[1].ID {
		t.Fatalf("log after reopening = %+v, want the two events appended before", log)
	}
	if _, err := s.Append(t.Context(), "s", eventstore.NoStream, one); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("append expecting no stream after reopening: err = %v, want a conflict", err)
	}
	next, err := s.Append(t.Context(), "s", eventstore.Exact(2), one)
	if err != nil {
		t.Fatalf("append after reopening: %v", err)
	}
	if next[0].Version != 3 || next[0].Position != before[1].Position+1 {
		t.Errorf("append after reopening got version %d position %d, want 3 and %d", next[0].Version, next[0].Position, before[1].Position+1)
	}
}

func TestAppended_SignalsEachAppend(t *testing.T) {
	s := sqlitetest.Open(t)
	for i := range 3 {
		signal := s.Appended()
		select {
		case <-signal:
			t.Fatalf("append %d: signalled before appending", i)
		default:
		}
		if _, err := s.Append(t.Context(), "signalled", eventstore.Any, []eventstore.NewEvent{{Type: "T", Data: json.RawMessage(`{}`)}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		select {
		case <-signal:
		default:
			t.Fatalf("append %d: not signalled", i)
		}
	}
}

// killBatch is how many events each append of the killed child holds.
const killBatch = 3

// appendUntilKilled is the child of TestAppend_SurvivesKill: it appends
// batches to new streams until it is killed, printing each stream's name
// once its append is acknowledged.
func appendUntilKilled(path string) int {
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	events := make([]eventstore.NewEvent, killBatch)
	for i := range events {
		events[i] = eventstore.NewEvent{Type: "Durable", Data: json.RawMessage(fmt.Sprintf(`{"part": %d}`, i))}
	}
	for i := 0; ; i++ {
		stream := fmt.Sprintf("durable-%d", i)
		if _, err := s.Append(ctx, stream, eventstore.NoStream, events); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := fmt.Println(stream); err != nil {
			return 1
		}
	}
}

// TestAppend_SurvivesKill kills a process with SIGKILL while it appends,
// then checks that every append it acknowledged is in the file and that no
// append is there in part.
func TestAppend_SurvivesKill(t *testing.T) {
	const acks = 300
	path := filepath.Join(t.TempDir(), "ledger.db")
	child := exec.CommandContext(t.Context(), os.Args[0])
	child.Env = append(os.Environ(), envKillChild+"="+path)
	var stderr strings.Builder
	child.Stderr = &stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := child.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	acked := map[string]bool{}
	lines := bufio.NewScanner(out)
	for len(acked) < acks && lines.Scan() {
		acked[lines.Text()] = true
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = child.Wait() // killed: the error says so
	if len(acked) < acks {
		t.Fatalf("child stopped after %d acknowledged appends, before it was killed: %s", len(acked), stderr.String())
	}

	s := sqlitetest.OpenAt(t, path)
	log, err := s.ReadAll(t.Context(), 0, 1<<20)
	if err != nil {
		t.Fatalf("read all after the kill: %v", err)
	}
	counts := map[string]int{}
	for _, e := range log {
		counts[e.Stream]++
	}
	for stream, n := range counts {
		if n != killBatch {
			t.Errorf("stream %s holds %d events after the kill, want all %d of its append or none", stream, n, killBatch)
		}
	}
	for stream := range acked {
		if counts[stream] == 0 {
			t.Errorf("acknowledged append to %s is missing after the kill", stream)
		}
	}
	t.Logf("%d appends acknowledged, %d found after the kill", len(acked), len(counts))
}

// BenchmarkAppend appends one event per transaction, each to a new stream,
// from 1 and 16 goroutines, alternating (ratiobench) with the baseline: a
// plain single-row INSERT into a table with UNIQUE(stream, version) in the
// same file.
func BenchmarkAppend(b *testing.B) {
	s := sqlitetest.Open(b)
	db := s.DB()
	if _, err := db.ExecContext(b.Context(), `CREATE TABLE baseline (stream TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL, UNIQUE (stream, version))`); err != nil {
		b.Fatalf("create baseline table: %v", err)
	}
	data := json.RawMessage(`{"handoff_id":"6f1c3a52-8d0e-4b7a-9a55-3c1de0f3b2a1","engineer_notes":"customer VPN drops every 20 minutes","priority":"high"}`)
	var streams atomic.Int64
	baseline := func(ctx context.Context, _ int) error {
		_, err := db.ExecContext(ctx, `INSERT INTO baseline (stream, version, data) VALUES (?, 1, ?)`, fmt.Sprint("s-", streams.Add(1)), string(data))
		return err
	}
	appendOne := func(ctx context.Context, _ int) error {
		_, err := s.Append(ctx, fmt.Sprint("s-", streams.Add(1)), eventstore.NoStream, []eventstore.NewEvent{{Type: "HandoffEscalated", Data: data}})
		return err
	}
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ratiobench.Run(b, writers, baseline, appendOne, nil)
		})
	}
}

// TestClassify_Busy takes the write lock of a file on one connection and
// tries to take it on another that does not wait: SQLite's SQLITE_BUSY is
// marked as the database being unavailable, other errors are not.
func TestClassify_Busy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_busy_timeout=0")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	holder, other := open(), open()
	tx, err := holder.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	_, err = other.BeginTx(t.Context(), nil)
	if err == nil {
		t.Fatal("a second writer took the lock")
	}
	if got := sqlitestore.Classify(err); !errors.Is(got, domain.ErrDatabaseUnavailable) || !errors.Is(got, err) {
		t.Fatalf("Classify(%v) = %v, want it marked domain.ErrDatabaseUnavailable", err, got)
	}
	_, err = tx.Exec(`SELECT * FROM missing`)
	if got := sqlitestore.Classify(err); errors.Is(got, domain.ErrDatabaseUnavailable) {
		t.Fatalf("Classify(%v) marked unavailable", err)
	}
}

// TestReadAccount_UsesTheAccountIndex checks that an account's read
// searches the index events_account, whose cost follows the account's
// events, rather than scanning the log.
func TestReadAccount_UsesTheAccountIndex(t *testing.T) {
	s := sqlitetest.Open(t)
	rows, err := s.ReadDB().QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+sqlitestore.ReadAccountSQL, uuid.NewString(), 0, 100)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatalf("explain: %v", err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("explain: %v", err)
	}
	if text := strings.Join(plan, "\n"); !strings.Contains(text, "SEARCH events USING INDEX events_account") || strings.Contains(text, "TEMP B-TREE") {
		t.Fatalf("plan of ReadAccount is not a search of events_account in its order:\n%s", text)
	}
}
