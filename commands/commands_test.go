package commands_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The projector is the handler's read-your-writes hook in every process.
var _ commands.Waiter = (*projections.Projector)(nil)

const (
	// settle bounds every wait of a test, so that a broken handler fails
	// the test instead of hanging it.
	settle = 15 * time.Second
	// racers is how many goroutines race for one session, and raceRounds
	// how many races a test runs.
	racers     = 32
	raceRounds = 20
)

// eventLog is an event store of either backend: both signal their own
// appends.
type eventLog interface {
	eventstore.Store
	Appended() <-chan struct{}
}

// fixture is a fresh store of one backend, its read models and a projector
// that runs only once a test starts it.
type fixture struct {
	log       eventLog
	views     projections.Queries
	projector *projections.Projector
}

// backend opens fixtures on one kind of store.
type backend struct {
	name string
	open func(tb testing.TB) *fixture
}

var backends = []backend{
	{"Postgres", openPostgres},
	{"SQLite", openSQLite},
}

// forEachBackend runs test once on each backend, as a subtest named after
// it.
func forEachBackend(t *testing.T, test func(t *testing.T, f *fixture)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.open(t)) })
	}
}

// poolSize lets every racer hold a connection at once, with room for the
// projector and the test's own reads.
const poolSize = racers + 8

func openPostgres(tb testing.TB) *fixture {
	tb.Helper()
	pool := pgtest.NewPool(tb, poolSize)
	events := pgstore.New(pool)
	return newFixture(tb, events, pgviews.New(pool))
}

func openSQLite(tb testing.TB) *fixture {
	tb.Helper()
	store := sqlitetest.Open(tb)
	return newFixture(tb, store, sqliteviews.New(store.DB(), store.ReadDB()))
}

func newFixture(tb testing.TB, log eventLog, views projections.Store) *fixture {
	logger := slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &fixture{
		log:       log,
		views:     views,
		projector: projections.NewProjector(log, views, leader.NewLocal(), log.Appended, logger),
	}
}

// handler returns a handler that does not wait for the read models.
func (f *fixture) handler() *commands.Handler { return commands.NewHandler(f.log, nil) }

// waitingHandler returns a handler that waits for the fixture's projector.
func (f *fixture) waitingHandler() *commands.Handler {
	return commands.NewHandler(f.log, f.projector)
}

// startProjector runs the projector until the test ends, then checks that
// it stopped cleanly.
func (f *fixture) startProjector(tb testing.TB) {
	tb.Helper()
	ledgertest.Go(context.Background(), tb, "projector", f.projector.Run)
}

// readStream returns the events of a session of an account.
func (f *fixture) readStream(tb testing.TB, account, session uuid.UUID) []eventstore.Event {
	tb.Helper()
	events, err := f.log.ReadStream(tb.Context(), eventcodec.StreamName(account, session))
	if err != nil {
		tb.Fatalf("read stream: %v", err)
	}
	return events
}

// readAll returns the whole log.
func (f *fixture) readAll(tb testing.TB) []eventstore.Event {
	tb.Helper()
	events, err := f.log.ReadAll(tb.Context(), 0, 10000)
	if err != nil {
		tb.Fatalf("read all: %v", err)
	}
	return events
}

// team is an account and a team of it.
type team struct{ account, id uuid.UUID }

func newTeam() team { return team{account: uuid.New(), id: uuid.New()} }

// user returns a new user of the team with the given role.
func (tm team) user(role domain.Role) domain.Actor {
	return domain.Actor{UserID: uuid.New(), AccountID: tm.account, TeamID: tm.id, Role: role}
}

var t0 = time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)

// at returns the time of the tests' minute m.
func at(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

func create(by domain.Actor, intent domain.Intent, priority domain.Priority, when time.Time) domain.CreateHandoff {
	return domain.CreateHandoff{
		Actor: by, HandoffID: uuid.New(), Intent: intent, Priority: priority,
		Notes: fmt.Sprintf("%s by %s", intent, by.UserID), At: when,
	}
}

func claim(by domain.Actor, handoff uuid.UUID, when time.Time) domain.ClaimHandoff {
	return domain.ClaimHandoff{Actor: by, HandoffID: handoff, At: when}
}

func withdraw(by domain.Actor, handoff uuid.UUID, when time.Time) domain.WithdrawHandoff {
	return domain.WithdrawHandoff{Actor: by, HandoffID: handoff, At: when}
}

// execute runs a command that must succeed.
func execute(tb testing.TB, h *commands.Handler, actor domain.Actor, session uuid.UUID, cmd domain.Command) commands.Result {
	tb.Helper()
	res, err := h.Execute(tb.Context(), actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
	if err != nil {
		tb.Fatalf("execute %T: %v (code %s)", cmd, err, domain.ErrorCode(err))
	}
	return res
}

// decode returns the domain event of a recorded one.
func decode(tb testing.TB, e eventstore.Event) domain.Event {
	tb.Helper()
	d, err := eventcodec.Decode(e.Type, e.Data)
	if err != nil {
		tb.Fatalf("decode event %d of %s: %v", e.Version, e.Stream, err)
	}
	return d
}

// assertHandoff compares handoffs, times by instant.
func assertHandoff(tb testing.TB, what string, got, want domain.Handoff) {
	tb.Helper()
	if !storetest.Equal(got, want) {
		tb.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// rejection checks the error of a rejected command.
type rejection func(tb testing.TB, err error)

// rejectedWith expects a *domain.Error with exactly this code and message.
func rejectedWith(code domain.Code, msg string) rejection {
	return func(tb testing.TB, err error) {
		tb.Helper()
		var e *domain.Error
		if !errors.As(err, &e) || e.Code != code || e.Message != msg {
			tb.Fatalf("err = %v (%T), want *domain.Error %s %q", err, err, code, msg)
		}
	}
}

// alreadyClaimed expects a *domain.ClaimedError naming the claimer and the
// time of the claim.
func alreadyClaimed(by uuid.UUID, when time.Time) rejection {
	return func(tb testing.TB, err error) {
		tb.Helper()
		var c *domain.ClaimedError
		if !errors.As(err, &c) || c.ClaimedBy != by || !c.ClaimedAt.Equal(when) {
			tb.Fatalf("err = %v (%+v), want *domain.ClaimedError by %s at %v", err, c, by, when)
		}
		if domain.ErrorCode(err) != domain.ECONFLICT {
			tb.Fatalf("code of %v = %s, want %s", err, domain.ErrorCode(err), domain.ECONFLICT)
		}
	}
}

// createdEvent is the event a successful creation of a handoff in session
// records.
func createdEvent(session uuid.UUID, c domain.CreateHandoff) domain.Event {
	created := domain.HandoffCreated{
		HandoffID: c.HandoffID, SessionID: session, AccountID: c.Actor.AccountID, TeamID: c.Actor.TeamID,
		CreatedBy: c.Actor.UserID, Notes: c.Notes, Priority: c.Priority, At: c.At,
	}
	if c.Intent == domain.IntentEscalate {
		return domain.HandoffEscalated{HandoffCreated: created}
	}
	return domain.HandoffParked{HandoffCreated: created}
}

// metadata is what the handler records about the request behind an event.
func metadata(actor domain.Actor, requestID string) eventstore.Metadata {
	return eventstore.Metadata{
		ActorID:       actor.UserID.String(),
		AccountID:     actor.AccountID.String(),
		TeamID:        actor.TeamID.String(),
		Role:          string(actor.Role),
		CorrelationID: requestID,
		CausationID:   requestID,
		RequestID:     requestID,
	}
}

// withClient returns m with the ids a client gave its request and the
// address it came from.
func withClient(m eventstore.Metadata, requestID, correlationID, ip string) eventstore.Metadata {
	m.ClientRequestID, m.ClientCorrelationID, m.ClientIP = requestID, correlationID, ip
	return m
}

// TestExecute_ReturnsHandoffAndRecordsEvents plays the life of a session:
// park, claim, escalate, withdraw. Each Execute returns the handoff it
// touched as it now stands; the stream holds exactly those events, with the
// request's metadata. A handler that waits for the read models also returns
// the position of the event it appended; one that does not returns none.
func TestExecute_ReturnsHandoffAndRecordsEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Run("NoWait", func(t *testing.T) { testLifeOfASession(t, f, f.handler(), false) })
		f.startProjector(t)
		t.Run("Waiting", func(t *testing.T) { testLifeOfASession(t, f, f.waitingHandler(), true) })
	})
}

func testLifeOfASession(t *testing.T, f *fixture, h *commands.Handler, waits bool) {
	tm, session := newTeam(), uuid.New()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	parked := create(alice, domain.IntentPark, domain.PriorityHigh, at(0))
	escalated := create(bob, domain.IntentEscalate, domain.PriorityUrgent, at(2))

	h1 := domain.Handoff{
		ID: parked.HandoffID, SessionID: session, AccountID: tm.account, TeamID: tm.id,
		Intent: domain.IntentPark, Notes: parked.Notes, Priority: domain.PriorityHigh,
		Status: domain.StatusOpen, CreatedBy: alice.UserID, CreatedAt: at(0),
	}
	h1Claimed := h1
	h1Claimed.Status, h1Claimed.ClaimedBy, h1Claimed.ClaimedAt = domain.StatusClaimed, bob.UserID, at(1)
	h2 := domain.Handoff{
		ID: escalated.HandoffID, SessionID: session, AccountID: tm.account, TeamID: tm.id,
		Intent: domain.IntentEscalate, Notes: escalated.Notes, Priority: domain.PriorityUrgent,
		Status: domain.StatusOpen, CreatedBy: bob.UserID, CreatedAt: at(2),
	}
	h2Withdrawn := h2
	h2Withdrawn.Status, h2Withdrawn.WithdrawnAt = domain.StatusWithdrawn, at(3)

	steps := []struct {
		name      string
		actor     domain.Actor
		cmd       domain.Command
		trace     commands.Trace
		want      domain.Handoff
		wantEvent domain.Event
		wantMeta  eventstore.Metadata
	}{
		{"park", alice, parked, commands.Trace{RequestID: "req-park"}, h1,
			createdEvent(session, parked),
			metadata(alice, "req-park")},
		{"claim", bob, claim(bob, parked.HandoffID, at(1)), commands.Trace{RequestID: "req-claim"}, h1Claimed,
			domain.HandoffClaimed{HandoffID: parked.HandoffID, SessionID: session, ClaimedBy: bob.UserID, Role: domain.RoleAdmin, At: at(1)},
			metadata(bob, "req-claim")},
		{"escalate", bob, escalated, commands.Trace{RequestID: "req-escalate", ClientRequestID: "client-req", ClientCorrelationID: "client-flow", ClientIP: "192.0.2.7"}, h2,
			createdEvent(session, escalated),
			withClient(metadata(bob, "req-escalate"), "client-req", "client-flow", "192.0.2.7")},
		{"withdraw", bob, withdraw(bob, escalated.HandoffID, at(3)), commands.Trace{RequestID: "req-withdraw"}, h2Withdrawn,
			domain.HandoffWithdrawn{HandoffID: escalated.HandoffID, SessionID: session, WithdrawnBy: bob.UserID, At: at(3)},
			metadata(bob, "req-withdraw")},
	}

	positions := make([]int64, len(steps))
	for i, s := range steps {
		res, err := h.Execute(t.Context(), s.actor, session, s.cmd, s.trace)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		assertHandoff(t, s.name+": result", res.Handoff, s.want)
		positions[i] = res.Position
	}

	events := f.readStream(t, tm.account, session)
	if len(events) != len(steps) {
		t.Fatalf("stream has %d events, want %d: %+v", len(events), len(steps), events)
	}
	for i, s := range steps {
		e := events[i]
		want := int64(0)
		if waits {
			want = e.Position
		}
		if positions[i] != want {
			t.Errorf("%s: result position %d, want %d (event recorded at %d)", s.name, positions[i], want, e.Position)
		}
		if e.Stream != eventcodec.StreamName(tm.account, session) || e.Version != int64(i+1) || e.Type != s.wantEvent.EventType() {
			t.Errorf("%s: recorded as %s in %s version %d, want %s in %s version %d",
				s.name, e.Type, e.Stream, e.Version, s.wantEvent.EventType(), eventcodec.StreamName(tm.account, session), i+1)
		}
		if _, err := ulid.ParseStrict(e.ID); err != nil {
			t.Errorf("%s: event id %q is not a ULID: %v", s.name, e.ID, err)
		}
		if got := decode(t, e); !reflect.DeepEqual(got, s.wantEvent) {
			t.Errorf("%s: event\n got %#v\nwant %#v", s.name, got, s.wantEvent)
		}
		if e.Metadata != s.wantMeta {
			t.Errorf("%s: metadata\n got %+v\nwant %+v", s.name, e.Metadata, s.wantMeta)
		}
	}
	for i := 1; i < len(events); i++ {
		if events[i].Position <= events[i-1].Position {
			t.Errorf("stream positions do not increase: %+v", events)
		}
	}
}

// TestExecute_RejectedCommandAppendsNothing gives commands the domain
// rejects to a session with history: each returns the domain's error and a
// zero result, and the log is unchanged, in this account and the other.
func TestExecute_RejectedCommandAppendsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		tm, session := newTeam(), uuid.New()
		alice, bob, erin := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin), tm.user(domain.RoleEngineer)
		viewer := tm.user(domain.RoleViewer)
		mallory := newTeam().user(domain.RoleOwner)

		// Alice parks h1, Bob claims it (and so holds the session) and
		// escalates h2, which is open.
		h := f.handler()
		parked := create(alice, domain.IntentPark, domain.PriorityNormal, at(0))
		execute(t, h, alice, session, parked)
		execute(t, h, bob, session, claim(bob, parked.HandoffID, at(1)))
		escalated := create(bob, domain.IntentEscalate, domain.PriorityUrgent, at(2))
		execute(t, h, bob, session, escalated)
		h1, h2 := parked.HandoffID, escalated.HandoffID

		cases := []struct {
			name    string
			actor   domain.Actor
			session uuid.UUID
			cmd     domain.Command
			want    rejection
		}{
			{"viewer claims", viewer, session, claim(viewer, h2, at(5)),
				rejectedWith(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)},
			{"claim a claimed handoff", erin, session, claim(erin, h1, at(5)),
				alreadyClaimed(bob.UserID, at(1))},
			{"the claimer claims again", bob, session, claim(bob, h1, at(5)),
				alreadyClaimed(bob.UserID, at(1))},
			{"claim an unknown handoff", erin, session, claim(erin, uuid.New(), at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
			{"the former holder parks", alice, session, create(alice, domain.IntentPark, domain.PriorityLow, at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)},
			{"the holder parks over an open handoff", bob, session, create(bob, domain.IntentPark, domain.PriorityLow, at(5)),
				rejectedWith(domain.ECONFLICT, domain.MsgOpenHandoffExist)},
			{"invalid priority", bob, session, create(bob, domain.IntentPark, "asap", at(5)),
				rejectedWith(domain.EINVALID, "priority must be one of low, normal, high, urgent")},
			{"a non-holder withdraws", erin, session, withdraw(erin, h2, at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)},
			{"the holder withdraws a claimed handoff", bob, session, withdraw(bob, h1, at(5)),
				alreadyClaimed(bob.UserID, at(1))},
			{"withdraw on a session without events", alice, uuid.New(), withdraw(alice, h1, at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)},
			{"another account claims", mallory, session, claim(mallory, h2, at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
			{"another account withdraws", mallory, session, withdraw(mallory, h2, at(5)),
				rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				assertRejected(t, f, h, c.actor, c.session, c.cmd, c.want)
				if n := len(f.readStream(t, c.actor.AccountID, c.session)); c.actor.AccountID != tm.account && n != 0 {
					t.Errorf("the other account's stream has %d events", n)
				}
			})
		}
		// Once withdrawn, the handoff cannot be withdrawn again.
		execute(t, h, bob, session, withdraw(bob, h2, at(6)))
		assertRejected(t, f, h, bob, session, withdraw(bob, h2, at(7)), rejectedWith(domain.ECONFLICT, domain.MsgHandoffWithdrawn))
	})
}

// assertRejected executes a command the domain rejects and checks its
// error, that it returned a zero result and that the log is unchanged.
func assertRejected(tb testing.TB, f *fixture, h *commands.Handler, actor domain.Actor, session uuid.UUID, cmd domain.Command, want rejection) {
	tb.Helper()
	before := f.readAll(tb)
	res, err := h.Execute(tb.Context(), actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
	want(tb, err)
	if res != (commands.Result{}) {
		tb.Errorf("rejected command returned %+v", res)
	}
	if after := f.readAll(tb); !reflect.DeepEqual(after, before) {
		tb.Errorf("the log changed:\nbefore %+v\n after %+v", before, after)
	}
}

// outcome is what one racer's Execute returned.
type outcome struct {
	res commands.Result
	err error
}

// race runs n calls of fn at once: each goroutine waits at a barrier until
// all have started, so that their loads and appends overlap.
func race(n int, fn func(i int) (commands.Result, error)) []outcome {
	out := make([]outcome, n)
	var started, done sync.WaitGroup
	barrier := make(chan struct{})
	for i := range n {
		started.Add(1)
		done.Go(func() {
			started.Done()
			<-barrier
			out[i].res, out[i].err = fn(i)
		})
	}
	started.Wait()
	close(barrier)
	done.Wait()
	return out
}

// winner returns the index of the only outcome without an error.
func winner(tb testing.TB, outcomes []outcome) int {
	tb.Helper()
	won := -1
	for i, o := range outcomes {
		if o.err != nil {
			continue
		}
		if won >= 0 {
			tb.Fatalf("racers %d and %d both succeeded: %+v and %+v", won, i, outcomes[won].res, o.res)
		}
		won = i
	}
	if won < 0 {
		tb.Fatalf("no racer succeeded; first error: %v", outcomes[0].err)
	}
	return won
}

// TestExecute_ConcurrentClaimsHaveOneWinner has many engineers claim one
// open handoff at once, round after round: exactly one claim succeeds,
// every other claimer gets "Handoff already claimed" naming the winner, and
// the stream records one HandoffClaimed.
func TestExecute_ConcurrentClaimsHaveOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		h := f.handler()
		roles := []domain.Role{domain.RoleEngineer, domain.RoleAdmin, domain.RoleOwner}
		for round := range raceRounds {
			tm, session := newTeam(), uuid.New()
			escalated := create(tm.user(domain.RoleEngineer), domain.IntentEscalate, domain.PriorityHigh, at(0))
			execute(t, h, escalated.Actor, session, escalated)

			claims := make([]domain.ClaimHandoff, racers)
			for i := range claims {
				// Distinct times tell whose claim an error reports.
				claims[i] = claim(tm.user(roles[i%len(roles)]), escalated.HandoffID, at(1).Add(time.Duration(i)*time.Microsecond))
			}
			outcomes := race(racers, func(i int) (commands.Result, error) {
				return h.Execute(t.Context(), claims[i].Actor, session, claims[i], commands.Trace{RequestID: uuid.NewString()})
			})

			won := claims[winner(t, outcomes)]
			for i, o := range outcomes {
				if o.err != nil {
					alreadyClaimed(won.Actor.UserID, won.At)(t, o.err)
					continue
				}
				if o.res.Handoff.Status != domain.StatusClaimed || o.res.Handoff.ClaimedBy != won.Actor.UserID || !o.res.Handoff.ClaimedAt.Equal(won.At) {
					t.Fatalf("round %d: winner %d got %+v", round, i, o.res.Handoff)
				}
			}
			events := f.readStream(t, tm.account, session)
			want := domain.HandoffClaimed{HandoffID: escalated.HandoffID, SessionID: session, ClaimedBy: won.Actor.UserID, Role: won.Actor.Role, At: won.At}
			if len(events) != 2 || !reflect.DeepEqual(decode(t, events[1]), want) {
				t.Fatalf("round %d: stream %+v, want the escalation and one claim %+v", round, events, want)
			}
		}
	})
}

// TestExecute_ConcurrentCreatesOpenOneHandoff has several would-be holders
// create a handoff on one new session at once, from many goroutines, round
// after round: exactly one creation succeeds; the winner's other attempts
// meet its open handoff and everybody else's meet a session they do not
// hold; the stream records one handoff.
func TestExecute_ConcurrentCreatesOpenOneHandoff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		h := f.handler()
		intents := []domain.Intent{domain.IntentPark, domain.IntentEscalate}
		for round := range raceRounds {
			tm, session := newTeam(), uuid.New()
			users := []domain.Actor{tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin), tm.user(domain.RoleOwner)}
			creates := make([]domain.CreateHandoff, racers)
			for i := range creates {
				creates[i] = create(users[i%len(users)], intents[i%len(intents)], domain.PriorityNormal, at(0))
			}
			outcomes := race(racers, func(i int) (commands.Result, error) {
				return h.Execute(t.Context(), creates[i].Actor, session, creates[i], commands.Trace{RequestID: uuid.NewString()})
			})

			w := winner(t, outcomes)
			won := creates[w]
			if got := outcomes[w].res.Handoff; got.ID != won.HandoffID || got.Status != domain.StatusOpen || got.CreatedBy != won.Actor.UserID {
				t.Fatalf("round %d: winner %d got %+v", round, w, got)
			}
			for i, o := range outcomes {
				switch {
				case i == w:
				case creates[i].Actor == won.Actor:
					rejectedWith(domain.ECONFLICT, domain.MsgOpenHandoffExist)(t, o.err)
				default:
					rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)(t, o.err)
				}
			}
			events := f.readStream(t, tm.account, session)
			if want := createdEvent(session, won); len(events) != 1 || !reflect.DeepEqual(decode(t, events[0]), want) {
				t.Fatalf("round %d: stream %+v, want only the winner's %#v", round, events, want)
			}
		}
	})
}

// TestExecute_AccountsAreIsolated uses one session id in two accounts whose
// teams even share an id: each account gets a stream of its own, and
// neither account's commands, state or read models see the other's
// handoff.
func TestExecute_AccountsAreIsolated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		f.startProjector(t)
		h := f.waitingHandler()
		session, teamID := uuid.New(), uuid.New()
		teamA, teamB := team{uuid.New(), teamID}, team{uuid.New(), teamID}
		alice, mallory := teamA.user(domain.RoleOwner), teamB.user(domain.RoleOwner)
		accounts := []struct {
			tm     team
			create domain.CreateHandoff
			res    commands.Result
		}{
			{tm: teamA, create: create(alice, domain.IntentPark, domain.PriorityNormal, at(0))},
			{tm: teamB, create: create(mallory, domain.IntentEscalate, domain.PriorityUrgent, at(1))},
		}
		for i := range accounts {
			a := &accounts[i]
			a.res = execute(t, h, a.create.Actor, session, a.create)
		}
		if eventcodec.StreamName(teamA.account, session) == eventcodec.StreamName(teamB.account, session) {
			t.Fatalf("both accounts' sessions are stream %s", eventcodec.StreamName(teamA.account, session))
		}

		for _, a := range accounts {
			events := f.readStream(t, a.tm.account, session)
			if want := createdEvent(session, a.create); len(events) != 1 || !reflect.DeepEqual(decode(t, events[0]), want) {
				t.Fatalf("stream of account %s: %+v, want only %#v", a.tm.account, events, want)
			}
			state, err := h.Load(t.Context(), a.tm.account, session)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if len(state.Handoffs) != 1 {
				t.Fatalf("account %s folds %d handoffs: %+v", a.tm.account, len(state.Handoffs), state.Handoffs)
			}
			assertHandoff(t, "folded state", state.Handoffs[0], a.res.Handoff)
			assertReadModels(t, f, h, a.tm, session, a.res)
		}

		// Each owner claims or withdraws the other account's handoff in
		// the session of the same id: there is no such handoff there.
		notFound := rejectedWith(domain.ENOTFOUND, domain.MsgHandoffNotFound)
		hA, hB := accounts[0].create.HandoffID, accounts[1].create.HandoffID
		assertRejected(t, f, h, mallory, session, claim(mallory, hA, at(2)), notFound)
		assertRejected(t, f, h, mallory, session, withdraw(mallory, hA, at(2)), notFound)
		assertRejected(t, f, h, alice, session, claim(alice, hB, at(2)), notFound)
		if n := len(f.readAll(t)); n != 2 {
			t.Errorf("the log has %d events, want the 2 creations", n)
		}
	})
}

// assertReadModels checks, without waiting, that the read models show the
// session of tm's account as its stream does: the history holds the
// stream's handoffs newest first, among them res's handoff as the command
// left it, and the team's queue holds the session's open handoff if any.
// The team must have no other session.
func assertReadModels(tb testing.TB, f *fixture, h *commands.Handler, tm team, session uuid.UUID, res commands.Result) {
	tb.Helper()
	ctx := tb.Context()
	state, err := h.Load(ctx, tm.account, session)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	wantHistory := slices.Clone(state.Handoffs)
	slices.Reverse(wantHistory)
	var wantQueue []domain.Handoff
	if open, ok := state.Open(); ok {
		wantQueue = append(wantQueue, *open)
	}
	if i := slices.IndexFunc(wantHistory, func(x domain.Handoff) bool { return x.ID == res.Handoff.ID }); i < 0 {
		tb.Fatalf("the stream has no handoff %s", res.Handoff.ID)
	} else {
		assertHandoff(tb, "handoff in the stream", wantHistory[i], res.Handoff)
	}

	history, err := f.views.History(ctx, tm.account, session, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		tb.Fatalf("history: %v", err)
	}
	assertHandoffs(tb, "history", history, wantHistory)
	queue, err := f.views.Queue(ctx, tm.account, tm.id, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		tb.Fatalf("queue: %v", err)
	}
	assertHandoffs(tb, "queue", queue, wantQueue)
}

func assertHandoffs(tb testing.TB, what string, got, want []domain.Handoff) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s has %d handoffs, want %d:\n got %+v\nwant %+v", what, len(got), len(want), got, want)
	}
	for i := range got {
		assertHandoff(tb, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

// readRounds is how many sessions the read-your-writes test plays through.
const readRounds = 10

// TestExecute_ReadYourWrites plays sessions through park, claim, escalate
// and withdraw with the projector running: as soon as each Execute
// returns, the session's history and the team's queue show its change,
// read once, without polling.
func TestExecute_ReadYourWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		f.startProjector(t)
		h := f.waitingHandler()
		for range readRounds {
			tm, session := newTeam(), uuid.New()
			owner, senior := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
			parked := create(owner, domain.IntentPark, domain.PriorityNormal, at(0))
			escalated := create(senior, domain.IntentEscalate, domain.PriorityUrgent, at(2))
			steps := []struct {
				actor domain.Actor
				cmd   domain.Command
			}{
				{owner, parked},
				{senior, claim(senior, parked.HandoffID, at(1))},
				{senior, escalated},
				{senior, withdraw(senior, escalated.HandoffID, at(3))},
			}
			for _, s := range steps {
				res := execute(t, h, s.actor, session, s.cmd)
				assertReadModels(t, f, h, tm, session, res)
			}
		}
	})
}

// giveUp is how long TestExecute_WaitOutlivesCancelledContext gives a
// handler the chance to return early, wrongly, once its caller's context is
// cancelled.
const giveUp = 200 * time.Millisecond

// TestExecute_WaitOutlivesCancelledContext cancels the caller's context
// right after the append, while no projector runs: Execute keeps waiting
// for the read models rather than failing a command that has happened, and
// succeeds once a projector starts and catches up.
func TestExecute_WaitOutlivesCancelledContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		h := f.waitingHandler()
		tm, session := newTeam(), uuid.New()
		cmd := create(tm.user(domain.RoleEngineer), domain.IntentEscalate, domain.PriorityHigh, at(0))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()

		appended := f.log.Appended()
		done := make(chan outcome, 1)
		go func() {
			res, err := h.Execute(ctx, cmd.Actor, session, cmd, commands.Trace{RequestID: "req-cancelled"})
			done <- outcome{res, err}
		}()
		select {
		case <-appended:
		case o := <-done:
			t.Fatalf("Execute returned before appending: %+v, %v", o.res, o.err)
		case <-time.After(settle):
			t.Fatalf("nothing appended within %v", settle)
		}
		cancel()

		// No projector runs, so a correct Execute cannot return yet. The
		// bounded wait orders nothing: it only gives a handler that gives
		// up with its caller the time to show it.
		select {
		case o := <-done:
			t.Fatalf("Execute returned before the read models had its event: %+v, %v", o.res, o.err)
		case <-time.After(giveUp):
		}
		if history, err := f.views.History(t.Context(), tm.account, session, projections.Page{Limit: projections.MaxPageSize}); err != nil || len(history) != 0 {
			t.Fatalf("read models before the projector ran: %+v, %v", history, err)
		}

		f.startProjector(t)
		var o outcome
		select {
		case o = <-done:
		case <-time.After(settle):
			t.Fatalf("Execute did not return within %v of the projector starting", settle)
		}
		if o.err != nil {
			t.Fatalf("Execute failed after its caller went away: %v", o.err)
		}
		events := f.readStream(t, tm.account, session)
		if want := createdEvent(session, cmd); len(events) != 1 || !reflect.DeepEqual(decode(t, events[0]), want) {
			t.Fatalf("stream %+v, want only %#v", events, want)
		}
		if o.res.Position != events[0].Position {
			t.Errorf("result position %d, event recorded at %d", o.res.Position, events[0].Position)
		}
		assertReadModels(t, f, h, tm, session, o.res)
	})
}
