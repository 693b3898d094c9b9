package sqliteviews_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

// settle bounds how long a test waits for the read models to catch up.
const settle = 15 * time.Second

func openFile(tb testing.TB) *sqlitestore.Store {
	tb.Helper()
	s, err := sqlitestore.Open(tb.Context(), filepath.Join(tb.TempDir(), "ledger.db"))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return s
}

func newViews(s *sqlitestore.Store) *sqliteviews.Store { return sqliteviews.New(s.DB(), s.ReadDB()) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) projections.Store {
		tb.Helper()
		return newViews(openFile(tb))
	})
}

// ledger is the embedded ledger of one test: event store, read models and
// a projector, with a command handler that waits for the read models.
type ledger struct {
	events    *sqlitestore.Store
	views     *sqliteviews.Store
	locker    leader.Locker
	projector *projections.Projector
	commands  *commands.Handler
}

func newLedger(tb testing.TB) *ledger {
	tb.Helper()
	l := &ledger{events: openFile(tb), locker: leader.NewLocal()}
	l.views = newViews(l.events)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l.projector = projections.NewProjector(l.events, l.views, l.locker, l.events.Appended, logger)
	l.commands = commands.NewHandler(l.events, l.projector)
	return l
}

// run runs the projector until the returned function is called or the test
// ends; the function reports an error Run returned.
func (l *ledger) run(tb testing.TB) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.projector.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("projector: %v", err)
		}
	})
	tb.Cleanup(stop)
	return stop
}

var priorities = []domain.Priority{domain.PriorityLow, domain.PriorityNormal, domain.PriorityHigh, domain.PriorityUrgent}

// story plays out the life of a new session of account: an engineer parks
// it, an admin claims it and escalates it, and for odd i withdraws the
// escalation. It returns the session.
func story(ctx context.Context, h *commands.Handler, account, team uuid.UUID, i int) (session uuid.UUID, err error) {
	session = uuid.New()
	do := func(actor domain.Actor, cmd domain.Command) {
		if err == nil {
			_, err = h.Execute(ctx, actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
		}
	}
	owner := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
	senior := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleAdmin}
	parked, escalated := uuid.New(), uuid.New()
	do(owner, domain.CreateHandoff{Actor: owner, HandoffID: parked, Intent: domain.IntentPark, Priority: priorities[i%4], Notes: "parked", At: h.Now()})
	do(senior, domain.ClaimHandoff{Actor: senior, HandoffID: parked, At: h.Now()})
	do(senior, domain.CreateHandoff{Actor: senior, HandoffID: escalated, Intent: domain.IntentEscalate, Priority: priorities[(i+1)%4], Notes: "escalated", At: h.Now()})
	if i%2 == 1 {
		do(senior, domain.WithdrawHandoff{Actor: senior, HandoffID: escalated, At: h.Now()})
	}
	if err != nil {
		return session, fmt.Errorf("story %d: %w", i, err)
	}
	return session, nil
}

// stories plays n stories of one account at once on 8 goroutines and
// returns their sessions.
func stories(tb testing.TB, h *commands.Handler, account, team uuid.UUID, n int) []uuid.UUID {
	tb.Helper()
	sessions := make([]uuid.UUID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sessions[i], errs[i] = story(tb.Context(), h, account, team, i)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return sessions
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

func checkpoint(tb testing.TB, s projections.Store) int64 {
	tb.Helper()
	pos, err := s.Checkpoint(tb.Context(), projections.HandoffsProjector)
	if err != nil {
		tb.Fatalf("checkpoint: %v", err)
	}
	return pos
}

// assertMatchesLog checks each session's history against the session's
// state folded from its stream, newest first.
func assertMatchesLog(tb testing.TB, l *ledger, account uuid.UUID, sessions []uuid.UUID) {
	tb.Helper()
	for _, session := range sessions {
		state, err := l.commands.Load(tb.Context(), account, session)
		if err != nil {
			tb.Fatalf("load session %s: %v", session, err)
		}
		want := slices.Clone(state.Handoffs)
		slices.Reverse(want)
		got, err := l.views.History(tb.Context(), account, session)
		if err != nil {
			tb.Fatalf("history of %s: %v", session, err)
		}
		if len(got) != len(want) {
			tb.Fatalf("session %s: history has %d handoffs, the log %d", session, len(got), len(want))
		}
		for i := range got {
			if !storetest.Equal(got[i], want[i]) {
				tb.Errorf("session %s handoff %d:\nread model %+v\nlog        %+v", session, i, got[i], want[i])
			}
		}
	}
}

// TestProjector_AnswersReadYourWrites runs commands through a handler that
// waits for the projector on SQLite: each command's change is in the read
// model when it returns, and the read model matches the log.
func TestProjector_AnswersReadYourWrites(t *testing.T) {
	l := newLedger(t)
	l.run(t)
	account, team := uuid.New(), uuid.New()
	sessions := stories(t, l.commands, account, team, 40)
	assertMatchesLog(t, l, account, sessions)
	head, err := l.events.Head(t.Context())
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	if got := checkpoint(t, l.views); got != head {
		t.Errorf("checkpoint = %d, want the head of the log %d", got, head)
	}
	queue, err := l.views.Queue(t.Context(), account, team)
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
	sessions := stories(t, l.commands, account, team, 60)
	stop() // Rebuild waits for the projector's lock.

	want, wantCheckpoint := dumpHandoffs(t, l.events), checkpoint(t, l.views)
	_, err := l.events.DB().ExecContext(t.Context(), `
		DELETE FROM handoffs WHERE id = (SELECT min(id) FROM handoffs);
		UPDATE handoffs SET engineer_notes = 'tampered', status = 'open' WHERE id = (SELECT max(id) FROM handoffs);
		INSERT INTO handoffs SELECT '00000000-0000-4000-8000-000000000000', account_id, team_id, session_id, intent,
			'no event made this', priority, priority_rank, status, created_by, created_at, claimed_by, claimed_at,
			withdrawn_at, position
		FROM handoffs LIMIT 1`)
	if err != nil {
		t.Fatalf("damage the read model: %v", err)
	}
	if dumpHandoffs(t, l.events) == want {
		t.Fatal("damaging the read model changed nothing")
	}

	readers := watchRowCount(t, l.events)
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
	if got := checkpoint(t, l.views); got != wantCheckpoint {
		t.Errorf("checkpoint after rebuild = %d, want %d", got, wantCheckpoint)
	}
	assertMatchesLog(t, l, account, sessions)
}

// watchRowCount counts the handoffs rows on the read pool in a loop until
// the returned function is called, which returns the lowest count seen.
func watchRowCount(tb testing.TB, s *sqlitestore.Store) func() int {
	tb.Helper()
	ctx, cancel := context.WithCancel(tb.Context())
	type result struct {
		lowest int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		r := result{lowest: -1}
		for ctx.Err() == nil {
			var n int
			if err := s.ReadDB().QueryRowContext(ctx, `SELECT count(*) FROM handoffs`).Scan(&n); err != nil {
				if ctx.Err() == nil {
					r.err = err
				}
				break
			}
			if r.lowest < 0 || n < r.lowest {
				r.lowest = n
			}
		}
		done <- r
	}()
	return func() int {
		tb.Helper()
		cancel()
		r := <-done
		if r.err != nil {
			tb.Fatalf("count handoffs during the rebuild: %v", r.err)
		}
		return r.lowest
	}
}
