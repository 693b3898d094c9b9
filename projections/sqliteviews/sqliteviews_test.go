package sqliteviews_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

// settle bounds how long a test waits for the read models to catch up.
const settle = 15 * time.Second

func newViews(s *sqlitestore.Store) *sqliteviews.Store { return sqliteviews.New(s.DB(), s.ReadDB()) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) projections.Store {
		tb.Helper()
		return newViews(sqlitetest.Open(tb))
	})
}

func TestProjector(t *testing.T) {
	storetest.RunProjector(t, func(tb testing.TB) storetest.Ledger {
		tb.Helper()
		events := sqlitetest.Open(tb)
		return storetest.Ledger{
			Log:   events,
			Views: newViews(events),
			Refuse: func(tb testing.TB, notes string) {
				tb.Helper()
				exec(tb, events, `CREATE TRIGGER test_refused BEFORE INSERT ON handoffs WHEN NEW.engineer_notes = '`+notes+`'
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`)
			},
			BreakCheckpoints: func(tb testing.TB) func() {
				tb.Helper()
				exec(tb, events, `
CREATE TRIGGER test_break_insert BEFORE INSERT ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints broken by the test'); END;
CREATE TRIGGER test_break_update BEFORE UPDATE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints broken by the test'); END`)
				return func() { exec(tb, events, `DROP TRIGGER test_break_insert; DROP TRIGGER test_break_update`) }
			},
			Dump: func(tb testing.TB) string { return dumpHandoffs(tb, events) },
		}
	})
}

func exec(tb testing.TB, s *sqlitestore.Store, sql string) {
	tb.Helper()
	if _, err := s.DB().ExecContext(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// ledger is the embedded ledger of one test: event store, read models and
// a projector, with a command handler that waits for the read models.
type ledger struct {
	events    *sqlitestore.Store
	views     *sqliteviews.Store
	projector *projections.Projector
	commands  *commands.Handler
}

func newLedger(tb testing.TB) *ledger {
	tb.Helper()
	l := &ledger{events: sqlitetest.Open(tb)}
	l.views = newViews(l.events)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l.projector = projections.NewProjector(l.events, l.views, leader.NewLocal(), l.events.Appended, logger)
	l.commands = commands.NewHandler(l.events, l.projector)
	return l
}

// run runs the projector until the returned function is called or the test
// ends; the function reports an error Run returned.
func (l *ledger) run(tb testing.TB) (stop func()) {
	tb.Helper()
	return ledgertest.Go(context.Background(), tb, "projector", l.projector.Run)
}

// dumpHandoffs returns every column of every handoffs row, ordered by id.
func dumpHandoffs(tb testing.TB, s *sqlitestore.Store) string {
	tb.Helper()
	var dump string
	err := s.ReadDB().QueryRowContext(tb.Context(), `SELECT coalesce(json_group_array(json_array(
		id, account_id, team_id, session_id, intent, engineer_notes, priority, priority_rank, status,
		created_by, created_at, claimed_by, claimed_at, withdrawn_at, position)), '[]')
		FROM (SELECT * FROM handoffs ORDER BY id)`).Scan(&dump)
	if err != nil {
		tb.Fatalf("dump handoffs: %v", err)
	}
	return dump
}

// TestProjector_AnswersReadYourWrites runs commands through a handler that
// waits for the projector on SQLite: each command's change is in the read
// model when it returns, and the read model matches the log.
func TestProjector_AnswersReadYourWrites(t *testing.T) {
	l := newLedger(t)
	l.run(t)
	account, team := uuid.New(), uuid.New()
	sessions, _ := storetest.Stories(t, l.commands, account, team, 40)
	storetest.AssertHistories(t, l.commands, l.views, account, sessions)
	head, err := l.events.Head(t.Context())
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	if got := storetest.Checkpoint(t, l.views); got != head {
		t.Errorf("checkpoint = %d, want the head of the log %d", got, head)
	}
	queue, err := l.views.Queue(t.Context(), account, team, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		t.Fatalf("queue: %v", err)
	}
	if len(queue) != len(sessions)/2 {
		t.Errorf("queue holds %d handoffs, want the %d escalations not withdrawn", len(queue), len(sessions)/2)
	}
}

// TestRebuild_YieldsIdenticalTables damages the read model (a row lost,
// one tampered with, one that no event made), rebuilds it while readers
// read, and checks it comes back identical, column for column, with the
// same checkpoint; the readers never see it empty.
func TestRebuild_YieldsIdenticalTables(t *testing.T) {
	l := newLedger(t)
	stop := l.run(t)
	account, team := uuid.New(), uuid.New()
	sessions, _ := storetest.Stories(t, l.commands, account, team, 60)
	stop() // so that the dump and the checkpoint stay put

	want, wantCheckpoint := dumpHandoffs(t, l.events), storetest.Checkpoint(t, l.views)
	_, err := l.events.DB().ExecContext(t.Context(), `
		DELETE FROM handoffs WHERE id = (SELECT min(id) FROM handoffs);
		UPDATE handoffs SET engineer_notes = 'tampered', status = 'open' WHERE id = (SELECT max(id) FROM handoffs);
		INSERT INTO handoffs SELECT '00000000-0000-4000-8000-000000000000', account_id, team_id, session_id, intent,
			'no event made this', priority, priority_rank, status, created_by, created_at, claimed_by, claimed_at,
			withdrawn_at, position, notes_erased
		FROM handoffs LIMIT 1`)
	if err != nil {
		t.Fatalf("damage the read model: %v", err)
	}
	if dumpHandoffs(t, l.events) == want {
		t.Fatal("damaging the read model changed nothing")
	}

	readers := storetest.WatchLowest(t, func(ctx context.Context) (n int, err error) {
		err = l.events.ReadDB().QueryRowContext(ctx, `SELECT count(*) FROM handoffs`).Scan(&n)
		return n, err
	})
	ctx, cancel := context.WithTimeout(t.Context(), settle)
	defer cancel()
	if err := projections.Rebuild(ctx, l.events, l.views); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if lowest := readers(); lowest == 0 {
		t.Error("a reader saw an empty handoffs table during the rebuild")
	}
	if got := dumpHandoffs(t, l.events); got != want {
		t.Errorf("rebuilt table differs from the projected one\nrebuilt:   %s\nprojected: %s", got, want)
	}
	if got := storetest.Checkpoint(t, l.views); got != wantCheckpoint {
		t.Errorf("checkpoint after rebuild = %d, want %d", got, wantCheckpoint)
	}
	storetest.AssertHistories(t, l.commands, l.views, account, sessions)
}

// TestUpdate_RefusesACheckedFence: the embedded store cannot check a
// lease's fence, so it refuses one rather than move the checkpoint
// unfenced; the local locker's fences are unchecked and pass.
func TestUpdate_RefusesACheckedFence(t *testing.T) {
	store := newViews(sqlitetest.Open(t))
	noop := func(projections.Tx) error { return nil }
	if err := store.Update(t.Context(), leader.Fence{Name: "handoffs", Token: 1}, projections.HandoffsProjector, 0, 1, noop); err == nil {
		t.Fatal("a checked fence was accepted")
	}
	lease, err := leader.NewLocal().Acquire(t.Context(), projections.HandoffsProjector)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if err := store.Update(t.Context(), lease.Fence(), projections.HandoffsProjector, 0, 1, noop); err != nil {
		t.Fatalf("move under a local lease: %v", err)
	}
	if got := storetest.Checkpoint(t, store); got != 1 {
		t.Fatalf("checkpoint = %d, want 1", got)
	}
}
