package projections_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The projector must satisfy the command handler's read-your-writes hook.
var _ commands.Waiter = (*projections.Projector)(nil)

// settle bounds how long a test waits for the read models to catch up.
const settle = 15 * time.Second

// process stands for one ledgerd process on the shared database: its own
// pool, event store, read-model store, leadership locker and projector.
type process struct {
	name      string
	pool      *pgxpool.Pool
	events    *pgstore.Store
	views     *pgviews.Store
	projector *projections.Projector
	// commands waits for the process's projector before it answers.
	commands *commands.Handler
	// offline makes every new connection of the pool fail, as when the
	// process is cut off from the database.
	offline atomic.Bool
}

// processOptions vary how a test process is built.
type processOptions struct {
	// locker replaces the process's PostgreSQL advisory-lock locker.
	locker leader.Locker
	// moves, when set, records every checkpoint move the process makes.
	moves *moveLog
}

func newProcess(tb testing.TB, url, name string, opts processOptions) *process {
	tb.Helper()
	p := &process{name: name}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("parse %s: %v", url, err)
	}
	cfg.MaxConns = 10
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	cfg.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
		if p.offline.Load() {
			return fmt.Errorf("process %s is offline", name)
		}
		return nil
	}
	if p.pool, err = pgxpool.NewWithConfig(tb.Context(), cfg); err != nil {
		tb.Fatalf("open pool: %v", err)
	}
	tb.Cleanup(p.pool.Close)
	p.events = pgstore.New(p.pool)
	p.views = pgviews.New(p.pool)
	var store projections.Store = p.views
	if opts.moves != nil {
		store = &recordingStore{Store: p.views, process: name, moves: opts.moves}
	}
	locker := opts.locker
	if locker == nil {
		locker = leader.NewPostgres(p.pool, slog.Default())
	}
	p.projector = projections.NewProjector(p.events, store, locker, p.events.Appended, slog.Default().With("process", name))
	p.commands = commands.NewHandler(p.events, boundedWaiter{p.projector})
	return p
}

// boundedWaiter makes a command whose effect never reaches the read models
// fail the test after a while instead of hanging it.
type boundedWaiter struct{ *projections.Projector }

func (w boundedWaiter) WaitFor(ctx context.Context, position int64) error {
	ctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	return w.Projector.WaitFor(ctx, position)
}

// start runs the process's projector until the test ends or stop is called;
// stop reports an error Run returned.
func (p *process) start(tb testing.TB) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.projector.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("projector of %s: %v", p.name, err)
			}
		case <-time.After(settle):
			tb.Errorf("projector of %s did not stop within %v", p.name, settle)
		}
	})
	tb.Cleanup(stop)
	return stop
}

// waitFor waits until the read models reach position, through proj.
func waitFor(tb testing.TB, proj *projections.Projector, position int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), settle)
	defer cancel()
	if err := proj.WaitFor(ctx, position); err != nil {
		tb.Fatalf("wait for position %d: %v", position, err)
	}
}

// move is one committed checkpoint move.
type move struct {
	process  string
	from, to int64
}

// moveLog collects the checkpoint moves of several processes.
type moveLog struct {
	mu    sync.Mutex
	moves []move
}

func (l *moveLog) add(m move) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.moves = append(l.moves, m)
}

// byProcess returns the moves a process made.
func (l *moveLog) byProcess(name string) []move {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []move
	for _, m := range l.moves {
		if m.process == name {
			out = append(out, m)
		}
	}
	return out
}

// assertChain checks that the committed moves, taken together, cover the
// log from 0 to last exactly once: each starts where the one before ended.
// A batch applied twice would show as two moves from the same position.
func (l *moveLog) assertChain(tb testing.TB, last int64) {
	tb.Helper()
	l.mu.Lock()
	moves := slices.Clone(l.moves)
	l.mu.Unlock()
	slices.SortFunc(moves, func(a, b move) int { return int(a.from - b.from) })
	at := int64(0)
	for _, m := range moves {
		if m.from != at || m.to <= m.from {
			tb.Fatalf("checkpoint moves do not form one chain from 0: at %d, next move %+v (all: %+v)", at, m, moves)
		}
		at = m.to
	}
	if at != last {
		tb.Fatalf("checkpoint moves end at %d, want %d", at, last)
	}
}

// recordingStore is the real store, recording the checkpoint moves that
// commit.
type recordingStore struct {
	projections.Store
	process string
	moves   *moveLog
}

func (s *recordingStore) Update(ctx context.Context, name string, from, to int64, fn func(projections.Tx) error) error {
	err := s.Store.Update(ctx, name, from, to, fn)
	if err == nil {
		s.moves.add(move{s.process, from, to})
	}
	return err
}

// scope is an account and a team in it.
type scope struct{ account, team uuid.UUID }

func newScope() scope { return scope{uuid.New(), uuid.New()} }

func (sc scope) actor(role domain.Role) domain.Actor {
	return domain.Actor{UserID: uuid.New(), AccountID: sc.account, TeamID: sc.team, Role: role}
}

// creation returns a command creating a new handoff, timed now.
func creation(h *commands.Handler, actor domain.Actor, intent domain.Intent, priority domain.Priority) domain.CreateHandoff {
	return domain.CreateHandoff{
		Actor: actor, HandoffID: uuid.New(), Intent: intent, Priority: priority,
		Notes: fmt.Sprintf("%s by %s", intent, actor.UserID), At: h.Now(),
	}
}

var priorities = []domain.Priority{domain.PriorityLow, domain.PriorityNormal, domain.PriorityHigh, domain.PriorityUrgent}

// story plays out the life of a new session of sc and returns the session
// and the position of its last event: an engineer parks it, an admin claims
// it and escalates it, and for odd i withdraws the escalation. The commands
// go through h in order, so their times increase.
func story(ctx context.Context, h *commands.Handler, sc scope, i int) (session uuid.UUID, last int64, err error) {
	session = uuid.New()
	do := func(cmd domain.Command, actor domain.Actor) {
		if err != nil {
			return
		}
		var res commands.Result
		res, err = h.Execute(ctx, actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
		last = res.Position
	}
	owner, senior := sc.actor(domain.RoleEngineer), sc.actor(domain.RoleAdmin)
	parked := creation(h, owner, domain.IntentPark, priorities[i%len(priorities)])
	do(parked, owner)
	do(domain.ClaimHandoff{Actor: senior, HandoffID: parked.HandoffID, At: h.Now()}, senior)
	escalated := creation(h, senior, domain.IntentEscalate, priorities[(i+1)%len(priorities)])
	do(escalated, senior)
	if i%2 == 1 {
		do(domain.WithdrawHandoff{Actor: senior, HandoffID: escalated.HandoffID, At: h.Now()}, senior)
	}
	if err != nil {
		return session, last, fmt.Errorf("story %d: %w", i, err)
	}
	return session, last, nil
}

// stories plays n stories of sc at once, on up to 8 goroutines, and returns
// their sessions and the highest position appended.
func stories(tb testing.TB, h *commands.Handler, sc scope, n int) ([]uuid.UUID, int64) {
	tb.Helper()
	sessions := make([]uuid.UUID, n)
	lasts := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sessions[i], lasts[i], errs[i] = story(tb.Context(), h, sc, i)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return sessions, slices.Max(lasts)
}

// assertMatchesLog checks the read model against the sessions' state
// folded from their streams: each session's history holds the same
// handoffs, newest first, and the table holds no others.
func assertMatchesLog(tb testing.TB, p *process, sc scope, sessions []uuid.UUID) {
	tb.Helper()
	loader := commands.NewHandler(p.events, nil)
	total := 0
	for _, session := range sessions {
		state, err := loader.Load(tb.Context(), sc.account, session)
		if err != nil {
			tb.Fatalf("load session %s: %v", session, err)
		}
		want := slices.Clone(state.Handoffs)
		slices.Reverse(want)
		got, err := p.views.History(tb.Context(), sc.account, session)
		if err != nil {
			tb.Fatalf("history of %s: %v", session, err)
		}
		total += len(want)
		if len(got) != len(want) {
			tb.Fatalf("session %s: history has %d handoffs, the log %d", session, len(got), len(want))
		}
		for i := range got {
			if !storetest.Equal(got[i], want[i]) {
				tb.Errorf("session %s handoff %d:\nread model %+v\nlog        %+v", session, i, got[i], want[i])
			}
		}
	}
	if n := countHandoffs(tb, p.pool); n != total {
		tb.Errorf("handoffs table has %d rows, the log %d handoffs", n, total)
	}
}

func countHandoffs(tb testing.TB, pool *pgxpool.Pool) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(tb.Context(), `SELECT count(*) FROM handoffs`).Scan(&n); err != nil {
		tb.Fatalf("count handoffs: %v", err)
	}
	return n
}

// checkpoint returns the stored checkpoint of the handoffs projector.
func checkpoint(tb testing.TB, store projections.Store) int64 {
	tb.Helper()
	pos, err := store.Checkpoint(tb.Context(), projections.HandoffsProjector)
	if err != nil {
		tb.Fatalf("checkpoint: %v", err)
	}
	return pos
}
