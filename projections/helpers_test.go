package projections_test

import (
	"context"
	"fmt"
	"io"
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
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
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

// shortLeases are lease timings that make the failover tests quick.
var shortLeases = pgleader.Config{TTL: time.Second, RenewInterval: 200 * time.Millisecond, Margin: 300 * time.Millisecond, RetryInterval: 50 * time.Millisecond}

// processOptions vary how a test process is built.
type processOptions struct {
	// locker replaces the process's PostgreSQL lease locker.
	locker leader.Locker
	// moves, when set, records every checkpoint move the process makes.
	moves *moveLog
	// logs, when set, also receives the projector's log.
	logs *ledgertest.Buffer
}

func newProcess(tb testing.TB, url, name string, opts processOptions) *process {
	tb.Helper()
	p := &process{name: name}
	p.pool = pgtest.Pool(tb, url, 10, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["application_name"] = name
		cfg.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
			if p.offline.Load() {
				return fmt.Errorf("process %s is offline", name)
			}
			return nil
		}
	})
	p.events = pgstore.New(p.pool)
	p.views = pgviews.New(p.pool)
	var store projections.Store = p.views
	if opts.moves != nil {
		store = &recordingStore{Store: p.views, process: name, moves: opts.moves}
	}
	locker := opts.locker
	if locker == nil {
		var err error
		if locker, err = pgleader.New(p.pool, slog.Default(), shortLeases); err != nil {
			tb.Fatal(err)
		}
	}
	logger := slog.Default()
	if opts.logs != nil {
		logger = slog.New(slog.NewTextHandler(io.MultiWriter(opts.logs, tb.Output()), nil))
	}
	p.projector = projections.NewProjector(p.events, store, locker, p.events.Appended, logger.With("process", name))
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
	return ledgertest.Go(context.Background(), tb, "projector of "+p.name, p.projector.Run)
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

func (s *recordingStore) Update(ctx context.Context, fence leader.Fence, name string, from, to int64, fn func(projections.Tx) error) error {
	err := s.Store.Update(ctx, fence, name, from, to, fn)
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

// stories plays n stories of sc at once (storetest.Stories) and returns
// their sessions and the highest position appended.
func stories(tb testing.TB, h *commands.Handler, sc scope, n int) ([]uuid.UUID, int64) {
	tb.Helper()
	return storetest.Stories(tb, h, sc.account, sc.team, n)
}

// assertMatchesLog checks the read model against the sessions' state
// folded from their streams (storetest.AssertHistories), and that the
// table holds no other handoffs.
func assertMatchesLog(tb testing.TB, p *process, sc scope, sessions []uuid.UUID) {
	tb.Helper()
	total := storetest.AssertHistories(tb, commands.NewHandler(p.events, nil), p.views, sc.account, sessions)
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
