package relay_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/relay"
	"github.com/resolutionflow/ledgerd/shred"
)

// erasureEnv is an env whose commands seal their personal data and whose
// relay reads the log opened, as serve wires them.
type erasureEnv struct {
	*env
	opened  shred.OpenedLog
	handler *commands.Handler
	team    uuid.UUID
}

func newErasureEnv(t *testing.T) *erasureEnv {
	t.Helper()
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	opened := shred.NewOpenedLog(e.store, keys)
	return &erasureEnv{env: e, opened: opened, handler: commands.NewHandler(opened, nil, commands.WithKeyring(keys)), team: uuid.New()}
}

func (e *erasureEnv) newRelay(cfg relay.Config) *relay.Relay {
	e.t.Helper()
	nc, err := relay.Connect(e.natsURL, "relay-test", e.logger)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	r, err := relay.New(relay.Deps{NATS: nc, Log: e.opened, Checkpoints: e.views, Locker: leader.NewLocal(), Wake: e.opened.Appended, Logger: e.logger}, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// handoff creates a handoff of session with notes and claims it.
func (e *erasureEnv) handoff(session uuid.UUID, holder uuid.UUID, notes string) {
	e.t.Helper()
	actor := domain.Actor{UserID: holder, AccountID: e.accounts[0], TeamID: e.team, Role: domain.RoleEngineer}
	id := uuid.New()
	create := domain.CreateHandoff{Actor: actor, HandoffID: id, Intent: domain.IntentEscalate, Notes: notes, Priority: domain.PriorityHigh, At: e.handler.Now()}
	if _, err := e.handler.Execute(e.t.Context(), actor, session, create, commands.Trace{RequestID: "r", ClientIP: "192.0.2.7"}); err != nil {
		e.t.Fatal(err)
	}
	claim := domain.ClaimHandoff{Actor: actor, HandoffID: id, At: e.handler.Now()}
	if _, err := e.handler.Execute(e.t.Context(), actor, session, claim, commands.Trace{RequestID: "r", ClientIP: "192.0.2.7"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *erasureEnv) erase(session uuid.UUID) {
	e.t.Helper()
	admin := domain.Actor{UserID: uuid.New(), AccountID: e.accounts[0], TeamID: e.team, Role: domain.RoleAdmin}
	if _, err := e.handler.Erase(e.t.Context(), admin, session, "request 7", commands.Trace{RequestID: "erase"}); err != nil {
		e.t.Fatal(err)
	}
}

// assertPurged checks that the stream holds, in log order, one message per
// event of the log but for the events of the erased session before its
// erasure (which held its notes and client addresses), and that no
// message holds secret.
func (e *erasureEnv) assertPurged(erased uuid.UUID, secret string) {
	e.t.Helper()
	log, err := e.opened.ReadAll(e.t.Context(), 0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	var want []eventstore.Event
	erasedAt := -1
	for i, ev := range log {
		if ev.Type == domain.TypeSessionDataErased && strings.HasSuffix(ev.Stream, erased.String()) {
			erasedAt = i
		}
	}
	for i, ev := range log {
		if i < erasedAt && strings.HasSuffix(ev.Stream, erased.String()) {
			continue
		}
		want = append(want, ev)
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), waitLimit)
	defer cancel()
	stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs != uint64(len(want)) {
		e.t.Fatalf("stream info %+v, %v; want %d messages", info, err, len(want))
	}
	c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	batch, err := c.Fetch(len(want), jetstream.FetchMaxWait(waitLimit))
	if err != nil {
		e.t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if strings.Contains(string(m.Data()), secret) {
			e.t.Fatalf("message %s still holds personal data of the erased session: %s", m.Subject(), m.Data())
		}
		if got := m.Headers().Get(eventcodec.HeaderPosition); got != strconv.FormatInt(want[i].Position, 10) {
			e.t.Fatalf("message %d is of position %s, want %d", i, got, want[i].Position)
		}
		i++
	}
	if i != len(want) {
		e.t.Fatalf("read %d messages, want %d", i, len(want))
	}
}

// TestRelay_ErasurePurgesTheSessionAndKeepsOrder erases a session whose
// events the relay has published: the relay publishes SessionDataErased
// and purges the session's earlier messages, and goes on publishing every
// later event once and in order, the session's new ones included, without
// taking the purge for a foreign or missing stream; so does a relay that
// restarts after the purge.
func TestRelay_ErasurePurgesTheSessionAndKeepsOrder(t *testing.T) {
	e := newErasureEnv(t)
	erased, kept := uuid.New(), uuid.New()
	holder, keeper := uuid.New(), uuid.New()
	const secret = "notes of Jane Roe"
	stop := e.run(e.newRelay(testConfig()))
	e.handoff(erased, holder, secret)
	e.handoff(kept, keeper, "other notes")
	e.waitUntil("the relay publishes the log", func() bool { return e.checkpoint() == e.lastPosition() })
	e.erase(erased)
	e.handoff(kept, keeper, "more notes")
	e.waitUntil("the relay publishes the erasure", func() bool { return e.checkpoint() == e.lastPosition() })
	e.assertPurged(erased, secret)

	stop() // a restart after the purge
	r := e.newRelay(testConfig())
	e.run(r)
	e.handoff(erased, holder, "notes after the erasure")
	e.waitUntil("the restarted relay publishes on", func() bool { return e.checkpoint() == e.lastPosition() })
	e.assertPurged(erased, secret)
	if st := r.Status(); st.StreamProblem != "" || st.Foreign != 0 || st.Duplicates != 0 {
		t.Fatalf("relay after the purge: %+v", st)
	}
}

// TestRelay_CrashBetweenErasureAndPurge stops the relay after it published
// an erasure and before it purged the session's messages: the next relay
// finds the erasure at the end of the stream, purges, and moves on without
// publishing anything twice.
func TestRelay_CrashBetweenErasureAndPurge(t *testing.T) {
	e := newErasureEnv(t)
	erased := uuid.New()
	const secret = "notes of John Doe"
	e.handoff(erased, uuid.New(), secret)
	e.handoff(uuid.New(), uuid.New(), "other notes")
	e.erase(erased)

	first := e.newRelay(testConfig())
	ctx, crash := context.WithCancel(context.Background())
	first.SetBeforePurge(crash)
	stop := e.runUntil(ctx, first)
	<-ctx.Done()
	stop()

	second := e.newRelay(testConfig())
	e.run(second)
	e.waitUntil("the successor's checkpoint reaches the log's end", func() bool { return e.checkpoint() == e.lastPosition() })
	time.Sleep(100 * time.Millisecond)
	e.assertPurged(erased, secret)
	if st := second.Status(); st.StreamProblem != "" || st.Foreign != 0 || st.Published != 0 {
		t.Fatalf("successor: %+v, want nothing published again and no stream problem", st)
	}
}
