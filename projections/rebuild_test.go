package projections_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func rebuild(tb testing.TB, p *process) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), settle)
	defer cancel()
	if err := projections.Rebuild(ctx, p.events, p.views); err != nil {
		tb.Fatalf("rebuild: %v", err)
	}
}

// dumpHandoffs returns every column of every handoffs row, ordered by id.
func dumpHandoffs(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	var dump string
	err := pool.QueryRow(tb.Context(), `SELECT coalesce(json_agg(h ORDER BY id), '[]')::text FROM handoffs h`).Scan(&dump)
	if err != nil {
		tb.Fatalf("dump handoffs: %v", err)
	}
	return dump
}

// TestRebuild_YieldsIdenticalTables damages the read model (a row lost, one
// tampered with, one that no event made), rebuilds it
// while readers read, and checks it comes back identical, row for row and
// column for column, with the same checkpoint; the readers never see it
// empty.
func TestRebuild_YieldsIdenticalTables(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	stop := p.start(t)
	sc := newScope()
	stories(t, p.commands, sc, 60)
	appendFutureEvent(t, p, sc)
	_, last := stories(t, p.commands, sc, 10)
	waitFor(t, p.projector, last)
	stop()

	want, wantCheckpoint := dumpHandoffs(t, p.pool), storetest.Checkpoint(t, p.views)
	_, err := p.pool.Exec(t.Context(), `
		WITH victim AS (SELECT id FROM handoffs ORDER BY id LIMIT 1)
		DELETE FROM handoffs WHERE id IN (SELECT id FROM victim);
		UPDATE handoffs SET engineer_notes = 'tampered', status = 'open' WHERE id = (SELECT id FROM handoffs ORDER BY id DESC LIMIT 1);
		INSERT INTO handoffs SELECT gen_random_uuid(), account_id, team_id, session_id, intent, 'no event made this',
			priority, priority_rank, status, created_by, created_at, claimed_by, claimed_at, withdrawn_at, position
		FROM handoffs LIMIT 1`)
	if err != nil {
		t.Fatalf("damage the read model: %v", err)
	}
	if dumpHandoffs(t, p.pool) == want {
		t.Fatal("damaging the read model changed nothing")
	}

	readers := storetest.WatchLowest(t, func(ctx context.Context) (n int, err error) {
		err = p.pool.QueryRow(ctx, `SELECT count(*) FROM handoffs`).Scan(&n)
		return n, err
	})
	rebuild(t, p)
	if minRows := readers(); minRows == 0 {
		t.Errorf("a reader saw an empty handoffs table during the rebuild")
	}
	if got := dumpHandoffs(t, p.pool); got != want {
		t.Errorf("rebuilt table differs from the projected one\nrebuilt:   %s\nprojected: %s", got, want)
	}
	if got := storetest.Checkpoint(t, p.views); got != wantCheckpoint {
		t.Errorf("checkpoint after rebuild = %d, want %d", got, wantCheckpoint)
	}
}

// TestRebuild_CatchesUpWithTheLog rebuilds a read model no projector has
// built: it must reach the end of the log, and a projector started
// afterwards must carry on from there.
func TestRebuild_CatchesUpWithTheLog(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	sc := newScope()
	sessions, _ := stories(t, commands.NewHandler(p.events, nil), sc, 20)
	last, err := p.events.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rebuild(t, p)
	if got := storetest.Checkpoint(t, p.views); got != last {
		t.Fatalf("checkpoint after rebuild = %d, want the last position %d", got, last)
	}
	assertMatchesLog(t, p, sc, sessions)

	p.start(t)
	more, _ := stories(t, p.commands, sc, 10)
	assertMatchesLog(t, p, sc, append(sessions, more...))
}

// TestRebuild_WhileTheProjectorRuns rebuilds while a projector leads and
// commands keep coming, and checks that the read model then matches the log
// exactly: the checkpoint's compare-and-set makes whichever of the two
// commits second start again from the other's checkpoint.
func TestRebuild_WhileTheProjectorRuns(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	sc := newScope()
	sessions, _ := stories(t, p.commands, sc, 20)
	type result struct {
		sessions []uuid.UUID
		err      error
	}
	more := make(chan result, 1)
	go func() { // commands keep coming while the rebuild runs
		var r result
		for i := range 20 {
			session, _, err := storetest.Story(t.Context(), p.commands, sc.account, sc.team, 100+i)
			if err != nil {
				r.err = err
				break
			}
			r.sessions = append(r.sessions, session)
		}
		more <- r
	}()
	rebuild(t, p)
	r := <-more
	if r.err != nil {
		t.Fatalf("command during the rebuild: %v", r.err)
	}
	sessions = append(sessions, r.sessions...)
	final, last := stories(t, p.commands, sc, 1)
	waitFor(t, p.projector, last)
	assertMatchesLog(t, p, sc, append(sessions, final...))
}

// TestRebuild_NeverMovesTheCheckpointBack lets a projector apply new events
// just after the rebuild has found the end of the log and before it takes
// the checkpoint. The rebuild must not set the checkpoint back to the end
// it found, which would wipe the projector's rows without replaying them
// (a claimed handoff would show open again) while the projector, believing
// itself past them, answered reads without waiting for them.
func TestRebuild_NeverMovesTheCheckpointBack(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	sc := newScope()
	sessions, _ := stories(t, commands.NewHandler(p.events, nil), sc, 5)
	var late []uuid.UUID
	var lateEnd int64
	log := &hookedLog{Log: p.events, atEnd: func() {
		// A projector applies a batch that ends past the rebuild's end.
		late, _ = stories(t, commands.NewHandler(p.events, nil), sc, 3)
		var err error
		if lateEnd, err = p.events.Head(t.Context()); err != nil {
			t.Fatal(err)
		}
		stop := p.start(t)
		waitFor(t, p.projector, lateEnd)
		stop()
	}}
	if err := projections.Rebuild(t.Context(), log, p.views); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if lateEnd == 0 {
		t.Fatal("the projector never ran during the rebuild")
	}
	if got := storetest.Checkpoint(t, p.views); got != lateEnd {
		t.Fatalf("checkpoint after the rebuild = %d, want %d, where the projector had taken it", got, lateEnd)
	}
	assertMatchesLog(t, p, sc, append(sessions, late...))
}

// hookedLog calls atEnd, once, the first time a read finds the end of the
// log.
type hookedLog struct {
	projections.Log
	atEnd func()
	done  bool
}

func (l *hookedLog) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	events, err := l.Log.ReadAll(ctx, after, limit)
	if err == nil && len(events) == 0 && !l.done {
		l.done = true
		l.atEnd()
	}
	return events, err
}
