package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestProjector_AppliesEveryEventOnce(t *testing.T) {
	t.Parallel()
	moves := &moveLog{}
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{moves: moves})
	p.start(t)
	sc := newScope()
	sessions, last := stories(t, p.commands, sc, 40)
	waitFor(t, p.projector, last)
	assertMatchesLog(t, p, sc, sessions)
	moves.assertChain(t, last)
	if got := storetest.Checkpoint(t, p.views); got != last {
		t.Errorf("checkpoint = %d, want the last position %d", got, last)
	}
}

// TestProjector_TwoProcessesApplyEachEventOnce runs the projectors of two
// processes on one database while both append. With the lease only one
// applies at a time; without it (each process with a lock of its own,
// so both lead) the checkpoint's compare-and-set must still keep every
// batch from being applied twice.
func TestProjector_TwoProcessesApplyEachEventOnce(t *testing.T) {
	lockers := map[string]func() (a, b leader.Locker){
		"Lease":       func() (a, b leader.Locker) { return nil, nil },
		"BothLeading": func() (a, b leader.Locker) { return leader.NewLocal(), leader.NewLocal() },
	}
	for name, lockers := range lockers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.NewDatabase(t)
			moves := &moveLog{}
			lockA, lockB := lockers()
			a := newProcess(t, url, "a", processOptions{moves: moves, locker: lockA})
			b := newProcess(t, url, "b", processOptions{moves: moves, locker: lockB})
			a.start(t)
			b.start(t)
			sc := newScope()
			var sessions []uuid.UUID
			var last int64
			for round := range 4 {
				p := []*process{a, b}[round%2]
				more, pos := stories(t, p.commands, sc, 12)
				sessions, last = append(sessions, more...), max(last, pos)
			}
			waitFor(t, a.projector, last)
			waitFor(t, b.projector, last)
			assertMatchesLog(t, a, sc, sessions)
			moves.assertChain(t, last)
		})
	}
}

func TestProjector_SkipsUnknownEventTypes(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	sc := newScope()
	before, _ := stories(t, p.commands, sc, 3)
	future := appendFutureEvent(t, p, sc)
	after, last := stories(t, p.commands, sc, 3)
	waitFor(t, p.projector, max(last, future))
	assertMatchesLog(t, p, sc, append(before, after...))
}

// appendFutureEvent appends an event of a type a later version of the
// ledger might add, and returns its position.
func appendFutureEvent(tb testing.TB, p *process, sc scope) int64 {
	tb.Helper()
	data, _ := json.Marshal(map[string]string{"handoff_id": uuid.NewString(), "until": "tomorrow"})
	recorded, err := p.events.Append(tb.Context(), eventcodec.StreamName(sc.account, uuid.New()), eventstore.NoStream,
		[]eventstore.NewEvent{{Type: "HandoffSnoozed", Data: data}})
	if err != nil {
		tb.Fatalf("append future event: %v", err)
	}
	return recorded[0].Position
}

// TestProjector_FailoverToAnotherProcess cuts the leading process off the
// database (its connections killed, new ones refused), round after round:
// the other process must take over and keep the read models current.
func TestProjector_FailoverToAnotherProcess(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	moves := &moveLog{}
	a := newProcess(t, url, "a", processOptions{moves: moves})
	b := newProcess(t, url, "b", processOptions{moves: moves})
	// The client's process runs no projector: its commands wait by polling
	// the checkpoint, so they return only once a projector elsewhere
	// applied them.
	client := newProcess(t, url, "client", processOptions{})
	sc := newScope()

	a.start(t)
	sessions, last := stories(t, a.commands, sc, 5) // a is the only projector, so it leads
	b.start(t)
	leading, standby := a, b
	for round := range 3 {
		leading.offline.Store(true)
		terminateConnections(t, client.pool, leading.name)
		more, pos := stories(t, client.commands, sc, 5)
		sessions, last = append(sessions, more...), pos
		if took := moves.byProcess(standby.name); len(took) == 0 || took[len(took)-1].to != last {
			t.Fatalf("round %d: %s did not take over: its moves %+v, last position %d", round, standby.name, took, last)
		}
		leading.offline.Store(false)
		leading, standby = standby, leading
	}
	assertMatchesLog(t, client, sc, sessions)
	moves.assertChain(t, last)
}

// TestProjector_DeposedLeaderStops ends the leading projector's lease at
// the server while its process runs on unaware, as when it froze past the
// lease's expiry, and has another process take the lease: the deposed
// projector's next checkpoint move must be refused, its batch not applied,
// and it must stop and wait for the lease, applying again only once it
// holds it anew.
func TestProjector_DeposedLeaderStops(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 1)
	newLocker := func(cfg pgleader.Config) leader.Locker {
		l, err := pgleader.New(pgtest.Pool(t, url, 0), slog.Default(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// The leader renews too seldom to notice the loss before its next move,
	// and the successor keeps its lease however slow the machine.
	slow := pgleader.Config{TTL: time.Minute, RenewInterval: 30 * time.Second, RetryInterval: 50 * time.Millisecond}
	unaware := newLocker(slow)
	logs := &ledgertest.Buffer{}
	a := newProcess(t, url, "a", processOptions{locker: unaware, logs: logs})
	a.start(t)
	sc := newScope()
	_, last := stories(t, a.commands, sc, 2)

	if _, err := admin.Exec(t.Context(), `UPDATE leader_leases SET expires_at = now() WHERE name = $1`, projections.HandoffsProjector); err != nil {
		t.Fatalf("expire the lease: %v", err)
	}
	successor, err := newLocker(slow).Acquire(t.Context(), projections.HandoffsProjector)
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Release()
	pos := appendFutureEvent(t, a, sc)
	ledgertest.WaitUntil(t, settle, "the deposed projector gives up", func() bool {
		return strings.Contains(logs.String(), "projector deposed")
	})
	if got := storetest.Checkpoint(t, a.views); got != last {
		t.Fatalf("checkpoint after the deposed projector's move = %d, want %d", got, last)
	}
	successor.Release()
	waitFor(t, a.projector, pos)
}

// terminateConnections ends every session of the named process on the
// test's database.
func terminateConnections(tb testing.TB, admin *pgxpool.Pool, process string) {
	tb.Helper()
	var n int
	err := admin.QueryRow(tb.Context(), `
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, process).Scan(&n)
	if err != nil {
		tb.Fatalf("terminate connections of %s: %v", process, err)
	}
	if n == 0 {
		tb.Fatalf("process %s has no connection to terminate", process)
	}
}

func TestQueue_OrdersEscalationsFirst(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	sc := newScope()
	create := func(intent domain.Intent, priority domain.Priority) uuid.UUID {
		return createIn(t, p.commands, sc.actor(domain.RoleEngineer), intent, priority).HandoffID
	}
	// Created in this order, so each is older than the next.
	var (
		parkLow     = create(domain.IntentPark, domain.PriorityLow)
		escNormal   = create(domain.IntentEscalate, domain.PriorityNormal)
		parkUrgent1 = create(domain.IntentPark, domain.PriorityUrgent)
		escUrgent   = create(domain.IntentEscalate, domain.PriorityUrgent)
		parkUrgent2 = create(domain.IntentPark, domain.PriorityUrgent)
		parkNormal  = create(domain.IntentPark, domain.PriorityNormal)
		escLow      = create(domain.IntentEscalate, domain.PriorityLow)
		parkHigh    = create(domain.IntentPark, domain.PriorityHigh)
	)
	want := []uuid.UUID{escUrgent, escNormal, escLow, parkUrgent1, parkUrgent2, parkHigh, parkNormal, parkLow}
	assertQueue(t, p, sc, want)
}

func TestQueue_ScopedToAccountAndTeam(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	sc := newScope()
	otherTeam, otherAccount := scope{sc.account, uuid.New()}, newScope()
	ours := createIn(t, p.commands, sc.actor(domain.RoleEngineer), domain.IntentPark, domain.PriorityNormal).HandoffID
	theirs := createIn(t, p.commands, otherTeam.actor(domain.RoleEngineer), domain.IntentEscalate, domain.PriorityUrgent).HandoffID
	foreign := createIn(t, p.commands, otherAccount.actor(domain.RoleEngineer), domain.IntentEscalate, domain.PriorityUrgent).HandoffID
	// Claimed and withdrawn handoffs leave the queue.
	claimedSession, _, err := storetest.Story(t.Context(), p.commands, sc.account, sc.team, 1) // ends withdrawn
	if err != nil {
		t.Fatal(err)
	}
	assertQueue(t, p, sc, []uuid.UUID{ours})
	assertQueue(t, p, otherTeam, []uuid.UUID{theirs})
	assertQueue(t, p, otherAccount, []uuid.UUID{foreign})
	assertQueue(t, p, scope{otherAccount.account, sc.team}, nil)
	if h, err := p.views.History(t.Context(), sc.account, claimedSession, projections.Page{Limit: projections.MaxPageSize}); err != nil || len(h) != 2 {
		t.Fatalf("history of the claimed session: %d handoffs, %v; want 2", len(h), err)
	}
}

// createIn creates a handoff in a new session.
func createIn(tb testing.TB, h *commands.Handler, actor domain.Actor, intent domain.Intent, priority domain.Priority) domain.CreateHandoff {
	tb.Helper()
	cmd := creation(h, actor, intent, priority)
	if _, err := h.Execute(tb.Context(), actor, uuid.New(), cmd, commands.Trace{}); err != nil {
		tb.Fatalf("create %s %s: %v", intent, priority, err)
	}
	return cmd
}

func assertQueue(tb testing.TB, p *process, sc scope, want []uuid.UUID) {
	tb.Helper()
	if got := queueIDs(tb, p, sc); !slices.Equal(got, want) {
		tb.Fatalf("queue = %v, want %v", got, want)
	}
}

func TestHistory_NewestFirstWithClaims(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	sc := newScope()
	session := uuid.New()
	owner, senior := sc.actor(domain.RoleEngineer), sc.actor(domain.RoleOwner)
	execute := func(actor domain.Actor, cmd domain.Command) commands.Result {
		t.Helper()
		res, err := p.commands.Execute(t.Context(), actor, session, cmd, commands.Trace{})
		if err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
		return res
	}
	first := creation(p.commands, owner, domain.IntentPark, domain.PriorityNormal)
	execute(owner, first)
	claim1 := execute(senior, domain.ClaimHandoff{Actor: senior, HandoffID: first.HandoffID, At: p.commands.Now()})
	second := creation(p.commands, senior, domain.IntentEscalate, domain.PriorityHigh)
	execute(senior, second)
	claim2 := execute(owner, domain.ClaimHandoff{Actor: owner, HandoffID: second.HandoffID, At: p.commands.Now()})
	third := creation(p.commands, owner, domain.IntentPark, domain.PriorityLow)
	execute(owner, third)

	// Another account's session of the same id is another stream.
	stranger := newScope().actor(domain.RoleOwner)
	if _, err := p.commands.Execute(t.Context(), stranger, session, creation(p.commands, stranger, domain.IntentPark, domain.PriorityUrgent), commands.Trace{}); err != nil {
		t.Fatalf("stranger's handoff: %v", err)
	}

	hist, err := p.views.History(t.Context(), sc.account, session, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	type row struct {
		id        uuid.UUID
		status    domain.Status
		claimedBy uuid.UUID
	}
	want := []row{
		{third.HandoffID, domain.StatusOpen, uuid.Nil},
		{second.HandoffID, domain.StatusClaimed, owner.UserID},
		{first.HandoffID, domain.StatusClaimed, senior.UserID},
	}
	if len(hist) != len(want) {
		t.Fatalf("history has %d handoffs, want %d: %+v", len(hist), len(want), hist)
	}
	for i, w := range want {
		h := hist[i]
		if (row{h.ID, h.Status, h.ClaimedBy}) != w {
			t.Errorf("history[%d] = %s %s by %s, want %s %s by %s", i, h.ID, h.Status, h.ClaimedBy, w.id, w.status, w.claimedBy)
		}
	}
	if !hist[1].ClaimedAt.Equal(claim2.Handoff.ClaimedAt) || !hist[2].ClaimedAt.Equal(claim1.Handoff.ClaimedAt) || !hist[0].ClaimedAt.IsZero() {
		t.Errorf("claimed_at: got %v, %v, %v", hist[0].ClaimedAt, hist[1].ClaimedAt, hist[2].ClaimedAt)
	}

	theirs, err := p.views.History(t.Context(), stranger.AccountID, session, projections.Page{Limit: projections.MaxPageSize})
	if err != nil || len(theirs) != 1 || theirs[0].CreatedBy != stranger.UserID {
		t.Errorf("stranger's history: %+v, %v; want only the stranger's handoff", theirs, err)
	}
	if none, err := p.views.History(t.Context(), uuid.New(), session, projections.Page{Limit: projections.MaxPageSize}); err != nil || len(none) != 0 {
		t.Errorf("a third account's history: %+v, %v; want none", none, err)
	}
}

func TestWaitFor_ProjectorInThisProcess(t *testing.T) {
	t.Parallel()
	p := newProcess(t, pgtest.NewDatabase(t), "a", processOptions{})
	p.start(t)
	assertReadYourWrites(t, p, 30)
}

// TestWaitFor_ProjectorInAnotherProcess sends commands through a process
// whose projector does not run, while another process projects.
func TestWaitFor_ProjectorInAnotherProcess(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	newProcess(t, url, "projecting", processOptions{}).start(t)
	assertReadYourWrites(t, newProcess(t, url, "client", processOptions{}), 10)
}

// assertReadYourWrites checks, round after round, that a command's effect
// is in the read model as soon as the command returns.
func assertReadYourWrites(tb testing.TB, p *process, rounds int) {
	tb.Helper()
	sc := newScope()
	for round := range rounds {
		owner, senior := sc.actor(domain.RoleEngineer), sc.actor(domain.RoleAdmin)
		session := uuid.New()
		created := creation(p.commands, owner, domain.IntentEscalate, domain.PriorityUrgent)
		if _, err := p.commands.Execute(tb.Context(), owner, session, created, commands.Trace{}); err != nil {
			tb.Fatalf("round %d: create: %v", round, err)
		}
		if q := queueIDs(tb, p, sc); len(q) != 1 || q[0] != created.HandoffID {
			tb.Fatalf("round %d: queue right after the escalation = %v, want [%s]", round, q, created.HandoffID)
		}
		claim := domain.ClaimHandoff{Actor: senior, HandoffID: created.HandoffID, At: p.commands.Now()}
		if _, err := p.commands.Execute(tb.Context(), senior, session, claim, commands.Trace{}); err != nil {
			tb.Fatalf("round %d: claim: %v", round, err)
		}
		if q := queueIDs(tb, p, sc); len(q) != 0 {
			tb.Fatalf("round %d: queue right after the claim = %v, want none", round, q)
		}
	}
}

// queueIDs returns the ids in the queue of sc, checking that it holds only
// open handoffs of sc.
func queueIDs(tb testing.TB, p *process, sc scope) []uuid.UUID {
	tb.Helper()
	q, err := p.views.Queue(tb.Context(), sc.account, sc.team, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		tb.Fatalf("queue: %v", err)
	}
	var ids []uuid.UUID
	for _, h := range q {
		ids = append(ids, h.ID)
		if h.Status != domain.StatusOpen || h.AccountID != sc.account || h.TeamID != sc.team {
			tb.Errorf("queue of %v holds %+v", sc, h)
		}
	}
	return ids
}

func TestWaitFor_StopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	running := newProcess(t, url, "running", processOptions{})
	running.start(t)
	idle := newProcess(t, url, "idle", processOptions{})
	_, last := stories(t, running.commands, newScope(), 1)
	for name, p := range map[string]*process{"InThisProcess": running, "Elsewhere": idle} {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		err := p.projector.WaitFor(ctx, last+1)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: WaitFor a position never appended: err = %v, want deadline exceeded", name, err)
		}
		waitFor(t, p.projector, last)
	}
}
