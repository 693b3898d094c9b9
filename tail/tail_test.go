package tail_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/relay"
	"github.com/resolutionflow/ledgerd/tail"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const waitLimit = 30 * time.Second

// ledger is a database with a relay publishing it to a NATS server.
type ledger struct {
	t       *testing.T
	store   *pgstore.Store
	views   *pgviews.Store
	nats    *natstest.Server
	handler *commands.Handler
}

func newLedger(t *testing.T) *ledger {
	t.Helper()
	pool := pgtest.NewPool(t, 0)
	l := &ledger{t: t, store: pgstore.New(pool), views: pgviews.New(pool), nats: natstest.Start(t)}
	l.handler = commands.NewHandler(l.store, nil)
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	nc, err := relay.Connect(l.nats.URL(), "relay", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := relay.New(relay.Deps{NATS: nc, Log: l.store, Checkpoints: l.views, Locker: leader.NewLocal(), Wake: l.store.Appended, Logger: logger}, relay.Config{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ledgertest.Go(context.Background(), t, "relay", r.Run)
	return l
}

// session is a session of an account, with a holder and a teammate.
type session struct {
	id               uuid.UUID
	holder, teammate domain.Actor
}

func newSession(account uuid.UUID) *session {
	team := uuid.New()
	return &session{
		id:       uuid.New(),
		holder:   domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer},
		teammate: domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer},
	}
}

// park parks the session and has the teammate claim it, who then holds
// it: HandoffParked, HandoffClaimed.
func (l *ledger) park(s *session) {
	l.t.Helper()
	id := uuid.New()
	l.execute(s.holder, s.id, domain.CreateHandoff{Actor: s.holder, HandoffID: id, Intent: domain.IntentPark, Priority: domain.PriorityHigh, At: l.handler.Now()})
	l.execute(s.teammate, s.id, domain.ClaimHandoff{Actor: s.teammate, HandoffID: id, At: l.handler.Now()})
	s.holder, s.teammate = s.teammate, s.holder
}

// escalate escalates the session and withdraws it: HandoffEscalated,
// HandoffWithdrawn.
func (l *ledger) escalate(s *session) {
	l.t.Helper()
	id := uuid.New()
	l.execute(s.holder, s.id, domain.CreateHandoff{Actor: s.holder, HandoffID: id, Intent: domain.IntentEscalate, Priority: domain.PriorityUrgent, At: l.handler.Now()})
	l.execute(s.holder, s.id, domain.WithdrawHandoff{Actor: s.holder, HandoffID: id, At: l.handler.Now()})
}

func (l *ledger) execute(actor domain.Actor, session uuid.UUID, cmd domain.Command) {
	l.t.Helper()
	if _, err := l.handler.Execute(l.t.Context(), actor, session, cmd, commands.Trace{}); err != nil {
		l.t.Fatalf("execute %T: %v", cmd, err)
	}
}

// published waits until the relay has published the whole log, and
// returns the log.
func (l *ledger) published() []eventstore.Event {
	l.t.Helper()
	events, err := l.store.ReadAll(l.t.Context(), 0, 1<<20)
	if err != nil {
		l.t.Fatal(err)
	}
	last := events[len(events)-1].Position
	waitUntil(l.t, "the relay publishes the log", func() bool {
		pos, err := l.views.Checkpoint(l.t.Context(), relay.Name)
		return err == nil && pos >= last
	})
	return events
}

// js returns a new NATS client, as a new `ledgerd tail` process would open.
func (l *ledger) js() jetstream.JetStream {
	l.t.Helper()
	return natstest.JetStream(l.t, l.nats.URL())
}

// subscriber is a tail.Run in the background.
type subscriber struct {
	t    *testing.T
	mu   sync.Mutex
	out  bytes.Buffer
	stop func()
}

// Write collects the output of tail.Run.
func (s *subscriber) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

// tail starts a subscriber on its own connection; stopping it ends the run
// and closes the connection, as when the process exits.
func (l *ledger) tail(opts tail.Options) *subscriber {
	l.t.Helper()
	js := l.js()
	s := &subscriber{t: l.t}
	run := ledgertest.Go(context.Background(), l.t, "tail.Run", func(ctx context.Context) error {
		return tail.Run(ctx, js, opts, s)
	})
	s.stop = func() {
		run()
		js.Conn().Close()
	}
	return s
}

// tailNew is tail for a subscriber that starts with new events: it
// returns once the subscriber's consumer exists, so that what is appended
// next counts as new.
func (l *ledger) tailNew(opts tail.Options) *subscriber {
	l.t.Helper()
	js := l.js()
	stream, err := js.Stream(l.t.Context(), eventcodec.DefaultNATSStream)
	if err != nil {
		l.t.Fatal(err)
	}
	consumers := func() []string {
		names := stream.ConsumerNames(l.t.Context())
		var out []string
		for n := range names.Name() {
			out = append(out, n)
		}
		if err := names.Err(); err != nil {
			l.t.Fatal(err)
		}
		return out
	}
	existing := consumers()
	sub := l.tail(opts)
	waitUntil(l.t, "the subscriber's consumer exists", func() bool {
		return slices.ContainsFunc(consumers(), func(n string) bool { return !slices.Contains(existing, n) })
	})
	return sub
}

// lines returns the events printed so far; each line must be an envelope.
func (s *subscriber) lines() []eventstore.Event {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var events []eventstore.Event
	sc := bufio.NewScanner(bytes.NewReader(s.out.Bytes()))
	for sc.Scan() {
		var e eventstore.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			s.t.Fatalf("line %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	return events
}

// expect waits until the subscriber has printed as many events as want
// and checks that they are want, in order.
func (s *subscriber) expect(want []eventstore.Event) {
	s.t.Helper()
	waitUntil(s.t, fmt.Sprintf("%d events are printed", len(want)), func() bool { return len(s.lines()) >= len(want) })
	got := s.lines()
	if !slices.Equal(ids(got), ids(want)) {
		s.t.Fatalf("printed events\n%v\nwant\n%v", describe(got), describe(want))
	}
}

func ids(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func describe(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = fmt.Sprintf("%d:%s:%s", e.Position, e.Type, e.Stream)
	}
	return out
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	ledgertest.WaitUntil(tb, waitLimit, what, cond)
}

// where returns the events that match.
func where(events []eventstore.Event, match func(eventstore.Event) bool) []eventstore.Event {
	var out []eventstore.Event
	for _, e := range events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// stream returns the event stream of a session.
func (s *session) stream() string { return eventcodec.StreamName(s.holder.AccountID, s.id) }

func TestRun_Filters(t *testing.T) {
	l := newLedger(t)
	accountA, accountB := uuid.New(), uuid.New()
	a1, a2, b1 := newSession(accountA), newSession(accountA), newSession(accountB)
	for _, s := range []*session{a1, a2, b1} {
		l.park(s)
		l.escalate(s)
	}
	l.published()

	for name, c := range map[string]struct {
		filter tail.Filter
		match  func(eventstore.Event) bool
		more   func() // appends an event the filter takes
	}{
		"All": {tail.Filter{}, func(eventstore.Event) bool { return true }, func() { l.park(b1) }},
		"Account": {tail.Filter{Account: accountA.String()}, func(e eventstore.Event) bool {
			return e.Stream == a1.stream() || e.Stream == a2.stream()
		}, func() { l.park(a1) }},
		"Session": {tail.Filter{Session: a2.id.String()}, func(e eventstore.Event) bool {
			return e.Stream == a2.stream()
		}, func() { l.escalate(a2) }},
		"Type": {tail.Filter{Type: domain.TypeHandoffClaimed}, func(e eventstore.Event) bool {
			return e.Type == domain.TypeHandoffClaimed
		}, func() { l.park(b1) }},
		"AccountAndType": {tail.Filter{Account: accountB.String(), Type: domain.TypeHandoffEscalated}, func(e eventstore.Event) bool {
			return e.Type == domain.TypeHandoffEscalated && e.Stream == b1.stream()
		}, func() { l.escalate(b1) }},
	} {
		t.Run(name, func(t *testing.T) {
			sub := l.tail(tail.Options{Filter: c.filter})
			sub.expect(where(l.published(), c.match))
			// An event the filter wrongly let through would come before
			// the ones appended now.
			c.more()
			sub.expect(where(l.published(), c.match))
			sub.stop()
		})
	}
}

func TestFilter_RejectsBadTokens(t *testing.T) {
	for name, f := range map[string]tail.Filter{
		"Account":     {Account: "acme.*"},
		"Session":     {Session: "not-a-uuid"},
		"TypeDot":     {Type: "Handoff.Claimed"},
		"TypeWild":    {Type: ">"},
		"TypeSpace":   {Type: "Handoff Claimed"},
		"TypeUnknown": {Type: "HandoffClaim"},
		"TypeCase":    {Type: "handoffclaimed"},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := f.Subject(); err == nil {
				t.Fatalf("Subject() = %q, want an error", s)
			}
		})
	}
	account := uuid.New()
	got, err := tail.Filter{Account: strings.ToUpper(account.String())}.Subject()
	if want := "handoff." + account.String() + ".*.*"; err != nil || got != want {
		t.Fatalf("Subject() = %q, %v; want %q", got, err, want)
	}
	// Erasures are an event type like the others: an operator watches
	// them with --type SessionDataErased.
	got, err = tail.Filter{Type: "SessionDataErased"}.Subject()
	if want := "handoff.*.*.SessionDataErased"; err != nil || got != want {
		t.Fatalf("Subject() of erasures = %q, %v; want %q", got, err, want)
	}
}

func TestRun_StartPositions(t *testing.T) {
	l := newLedger(t)
	s := newSession(uuid.New())
	l.park(s)
	l.escalate(s)
	before := l.published()
	between := time.Now()
	l.park(s)
	log := l.published()

	t.Run("Sequence", func(t *testing.T) {
		l.tail(tail.Options{Start: tail.StartAtSequence(2)}).expect(log[1:])
	})
	t.Run("Time", func(t *testing.T) {
		l.tail(tail.Options{Start: tail.StartAtTime(between)}).expect(log[len(before):])
	})
	t.Run("New", func(t *testing.T) {
		sub := l.tailNew(tail.Options{Start: tail.StartNew})
		l.escalate(s)
		sub.expect(l.published()[len(log):])
	})
}

func TestParseStart(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for in, want := range map[string]tail.Start{
		"":                     {},
		"all":                  {},
		"new":                  tail.StartNew,
		"42":                   tail.StartAtSequence(42),
		"2026-01-02T15:04:05Z": tail.StartAtTime(time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)),
		"15m":                  tail.StartAtTime(now.Add(-15 * time.Minute)),
	} {
		got, err := tail.ParseStart(in, now)
		if err != nil || got != want {
			t.Errorf("ParseStart(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-3", "yesterday", "-15m", "2026-01-02"} {
		if _, err := tail.ParseStart(in, now); err == nil {
			t.Errorf("ParseStart(%q) accepted", in)
		}
	}
}

func TestRun_DurableResumesWhereItStopped(t *testing.T) {
	l := newLedger(t)
	s := newSession(uuid.New())
	l.park(s)
	l.escalate(s)
	first := l.published()
	opts := tail.Options{Durable: "audit", Filter: tail.Filter{Account: s.holder.AccountID.String()}}

	sub := l.tail(opts)
	sub.expect(first)
	js := l.js()
	consumer, err := js.Consumer(t.Context(), eventcodec.DefaultNATSStream, "audit")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the subscriber acknowledges what it printed", func() bool {
		info, err := consumer.Info(t.Context())
		return err == nil && info.AckFloor.Stream == uint64(len(first))
	})
	sub.stop()
	waitUntil(t, "the server sees the subscriber gone", func() bool {
		info, err := consumer.Info(t.Context())
		return err == nil && info.NumWaiting == 0
	})

	l.escalate(s)
	l.park(s)
	resumed := l.tail(opts)
	resumed.expect(l.published()[len(first):])

	other := opts
	other.Filter = tail.Filter{Type: domain.TypeHandoffParked}
	js2 := l.js()
	if err := tail.Run(t.Context(), js2, other, &bytes.Buffer{}); err == nil {
		t.Fatal("Run reused a durable consumer with another filter")
	}
}

// A claim made through the command handler reaches a subscriber within a
// second.
func TestRun_ShowsClaimWithinASecond(t *testing.T) {
	l := newLedger(t)
	s := newSession(uuid.New())
	l.park(s)
	l.published()
	sub := l.tailNew(tail.Options{Start: tail.StartNew, Filter: tail.Filter{Type: domain.TypeHandoffClaimed}})

	start := time.Now()
	l.park(s) // parks and claims
	claims := where(l.published(), func(e eventstore.Event) bool { return e.Type == domain.TypeHandoffClaimed })
	sub.expect(claims[len(claims)-1:])
	if took := time.Since(start); took > time.Second {
		t.Errorf("the claim took %v to reach the subscriber, want under a second", took)
	}
}
