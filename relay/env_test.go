package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
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
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/relay"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// waitLimit bounds every wait for the relay to do something.
const waitLimit = 30 * time.Second

// testConfig makes the relay quick to react and uses small batches, so that
// a few dozen events span several of them.
func testConfig() relay.Config {
	return relay.Config{
		BatchSize:     7,
		PollInterval:  50 * time.Millisecond,
		AckTimeout:    2 * time.Second,
		MinBackoff:    20 * time.Millisecond,
		MaxBackoff:    200 * time.Millisecond,
		StatsInterval: 100 * time.Millisecond,
	}
}

// env is one database and one NATS server (or cluster), shared by the
// relays of a test as if each ran in its own ledgerd process.
type env struct {
	t        *testing.T
	url      string
	store    *pgstore.Store
	views    *pgviews.Store
	nats     *natstest.Server // nil on a cluster
	natsURL  string
	js       jetstream.JetStream // the test's own client
	handler  *commands.Handler
	accounts []uuid.UUID
	logger   *slog.Logger
}

// newEnv returns an env on its own NATS server.
func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	e := newEnvOn(t, srv.URL())
	e.nats = srv
	return e
}

// newEnvOn returns an env on the NATS servers at natsURL.
func newEnvOn(t *testing.T, natsURL string) *env {
	t.Helper()
	e := &env{
		t:        t,
		url:      pgtest.NewDatabase(t),
		natsURL:  natsURL,
		accounts: []uuid.UUID{uuid.New(), uuid.New(), uuid.New()},
		logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	pool := e.newPool()
	e.store, e.views = pgstore.New(pool), pgviews.New(pool)
	e.handler = commands.NewHandler(e.store, nil)
	e.js = natstest.JetStream(t, natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	return e
}

// newPool opens a pool on the env's database, as another process would.
func (e *env) newPool() *pgxpool.Pool {
	e.t.Helper()
	return pgtest.Pool(e.t, e.url, 0)
}

// newLocker returns a PostgreSQL locker on a pool of its own, as another
// process would have.
func (e *env) newLocker() leader.Locker {
	e.t.Helper()
	l, err := pgleader.New(e.newPool(), e.logger, pgleader.Config{})
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// newRelay returns a relay on the env's log, with its own NATS connection
// made by relay.Connect with opts added.
func (e *env) newRelay(locker leader.Locker, cfg relay.Config, opts ...nats.Option) *relay.Relay {
	e.t.Helper()
	return e.newRelayWith(locker, cfg, e.logger, opts...)
}

// newRelayLogging returns a relay like newRelay with a local locker,
// logging to logger.
func (e *env) newRelayLogging(logger *slog.Logger) *relay.Relay {
	e.t.Helper()
	return e.newRelayWith(leader.NewLocal(), testConfig(), logger)
}

// newRelayWith returns a relay like newRelay, logging to logger.
func (e *env) newRelayWith(locker leader.Locker, cfg relay.Config, logger *slog.Logger, opts ...nats.Option) *relay.Relay {
	e.t.Helper()
	opts = append([]nats.Option{nats.ReconnectWait(20 * time.Millisecond)}, opts...)
	nc, err := relay.Connect(e.natsURL, "relay-test", e.logger, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	r, err := relay.New(relay.Deps{NATS: nc, Log: e.store, Checkpoints: e.views, Locker: locker, Wake: e.store.Appended, Logger: logger}, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// run runs r in the background and returns a function that stops it (as a
// crash would, at any point) and waits for it; the test's end stops it too.
func (e *env) run(r *relay.Relay) (stop func()) {
	return e.runUntil(context.Background(), r)
}

// runUntil is run with a context whose end also stops r.
func (e *env) runUntil(ctx context.Context, r *relay.Relay) (stop func()) {
	e.t.Helper()
	return ledgertest.Go(ctx, e.t, "relay.Run", r.Run)
}

// handoff parks or escalates a new session of the account, then claims or
// withdraws it: two events. It does not fail the test, so that it can run
// on another goroutine.
func (e *env) handoff(ctx context.Context, account uuid.UUID, i int) error {
	team := uuid.New()
	holder := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
	session, id := uuid.New(), uuid.New()
	intent := domain.IntentPark
	if i%2 == 1 {
		intent = domain.IntentEscalate
	}
	now := e.handler.Now()
	create := domain.CreateHandoff{Actor: holder, HandoffID: id, Intent: intent, Notes: "handoff " + strconv.Itoa(i), Priority: domain.PriorityNormal, At: now}
	if _, err := e.handler.Execute(ctx, holder, session, create, commands.Trace{RequestID: "req-" + strconv.Itoa(i)}); err != nil {
		return fmt.Errorf("create handoff %d: %w", i, err)
	}
	var next domain.Command = domain.ClaimHandoff{Actor: domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}, HandoffID: id, At: now}
	if i%3 == 2 {
		next = domain.WithdrawHandoff{Actor: holder, HandoffID: id, At: now}
	}
	if _, err := e.handler.Execute(ctx, holder, session, next, commands.Trace{}); err != nil {
		return fmt.Errorf("finish handoff %d: %w", i, err)
	}
	return nil
}

// handoffs appends n handoffs (2n events) spread over the env's accounts.
func (e *env) handoffs(n int) {
	e.t.Helper()
	for i := range n {
		if err := e.handoff(e.t.Context(), e.accounts[i%len(e.accounts)], i); err != nil {
			e.t.Fatal(err)
		}
	}
}

// logEvents returns the whole committed log.
func (e *env) logEvents() []eventstore.Event {
	e.t.Helper()
	events, err := e.store.ReadAll(e.t.Context(), 0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	return events
}

// waitUntil polls cond until it holds, failing the test after waitLimit.
func (e *env) waitUntil(what string, cond func() bool) {
	e.t.Helper()
	ledgertest.WaitUntil(e.t, waitLimit, what, cond)
}

// lastPosition returns the position of the log's last event.
func (e *env) lastPosition() int64 {
	e.t.Helper()
	events := e.logEvents()
	return events[len(events)-1].Position
}

// publishForeign publishes into the stream, as a client other than the
// relay, a message with headers on subject.
func (e *env) publishForeign(subject string, headers map[string]string) {
	e.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(`{"forged": true}`)
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	if _, err := e.js.PublishMsg(e.t.Context(), m); err != nil {
		e.t.Fatalf("publish a foreign message: %v", err)
	}
}

// checkpoint returns the relay checkpoint stored in the database.
func (e *env) checkpoint() int64 {
	e.t.Helper()
	pos, err := e.views.Checkpoint(e.t.Context(), relay.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	return pos
}

// waitPublished waits until the stored checkpoint reaches the last event
// of the log, then checks that the stream holds exactly the log, in order.
func (e *env) waitPublished() []eventstore.Event {
	e.t.Helper()
	want := e.logEvents()
	last := want[len(want)-1].Position
	e.waitUntil(fmt.Sprintf("the checkpoint reaches %d", last), func() bool { return e.checkpoint() >= last })
	e.assertStream(want)
	return want
}

// assertStream checks that the JetStream stream holds exactly one message
// per event of want, in order, each with the event's subject, headers and
// envelope.
func (e *env) assertStream(want []eventstore.Event) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), waitLimit)
	defer cancel()
	stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(want)) {
		var positions []string
		for _, m := range e.fetchAll(ctx, stream, int(info.State.Msgs)) {
			positions = append(positions, m.Headers().Get(eventcodec.HeaderPosition))
		}
		e.t.Fatalf("stream holds %d messages, want %d (one per committed event); their positions: %v", info.State.Msgs, len(want), positions)
	}
	got := e.fetchAll(ctx, stream, len(want))
	for i, m := range got {
		meta, err := m.Metadata()
		if err != nil {
			e.t.Fatal(err)
		}
		if meta.Sequence.Stream != uint64(i+1) {
			e.t.Fatalf("message %d has stream sequence %d", i, meta.Sequence.Stream)
		}
		checkMessage(e.t, m, want[i])
	}
}

// assertStreamAmong checks that the JetStream stream holds one message per
// event of want, in order, with the event's subject, headers and envelope,
// and besides them exactly foreign messages whose body is not an event.
func (e *env) assertStreamAmong(want []eventstore.Event, foreign int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), waitLimit)
	defer cancel()
	stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		e.t.Fatal(err)
	}
	var events []jetstream.Msg
	for _, m := range e.fetchAll(ctx, stream, len(want)+foreign) {
		if !bytes.Contains(m.Data(), []byte(`"forged"`)) {
			events = append(events, m)
		}
	}
	if len(events) != len(want) {
		e.t.Fatalf("stream holds %d events besides %d foreign messages, want %d", len(events), foreign, len(want))
	}
	for i, m := range events {
		checkMessage(e.t, m, want[i])
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != uint64(len(want)+foreign) {
		e.t.Fatalf("stream info %+v (%v), want %d messages", info, err, len(want)+foreign)
	}
}

// fetchAll reads n messages from the start of the stream.
func (e *env) fetchAll(ctx context.Context, stream jetstream.Stream, n int) []jetstream.Msg {
	e.t.Helper()
	c, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	var got []jetstream.Msg
	for len(got) < n {
		batch, err := c.Fetch(n-len(got), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			got = append(got, m)
		}
		if err := batch.Error(); err != nil {
			e.t.Fatalf("fetch: %v", err)
		}
		if ctx.Err() != nil {
			e.t.Fatalf("read %d of %d messages: %v", len(got), n, ctx.Err())
		}
	}
	return got
}

// envelopeKeys are the fields of the published JSON envelope.
var envelopeKeys = []string{"data", "id", "metadata", "position", "recorded_at", "stream", "type", "version"}

// checkMessage checks that m publishes want.
func checkMessage(tb testing.TB, m jetstream.Msg, want eventstore.Event) {
	tb.Helper()
	a, s, err := eventcodec.ParseStreamName(want.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	account, session := a.String(), s.String()
	if s := eventcodec.Subject(account, session, want.Type); m.Subject() != s {
		tb.Errorf("event %d: subject %q, want %q", want.Position, m.Subject(), s)
	}
	wantHeaders := map[string]string{
		jetstream.MsgIDHeader:          want.ID,
		eventcodec.HeaderEventType:     want.Type,
		eventcodec.HeaderStream:        want.Stream,
		eventcodec.HeaderStreamVersion: strconv.FormatInt(want.Version, 10),
		eventcodec.HeaderPosition:      strconv.FormatInt(want.Position, 10),
		eventcodec.HeaderAccount:       account,
		eventcodec.HeaderSession:       session,
	}
	for k, v := range wantHeaders {
		if got := m.Headers().Get(k); got != v {
			tb.Errorf("event %d: header %s = %q, want %q", want.Position, k, got, v)
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.Data(), &fields); err != nil {
		tb.Fatalf("event %d: body: %v", want.Position, err)
	}
	if keys := slices.Sorted(maps.Keys(fields)); !slices.Equal(keys, envelopeKeys) {
		tb.Errorf("event %d: envelope fields %v, want %v", want.Position, keys, envelopeKeys)
	}
	var got eventstore.Event
	if err := json.Unmarshal(m.Data(), &got); err != nil {
		tb.Fatalf("event %d: body: %v", want.Position, err)
	}
	got.Data, want.Data = compact(tb, got.Data), compact(tb, want.Data)
	// Not in the envelope: the stored metadata's bytes and the hashes.
	want.RawMetadata, want.PrevHash, want.Hash = nil, eventstore.Hash{}, eventstore.Hash{}
	if !reflect.DeepEqual(got, want) {
		tb.Errorf("event %d: envelope\n got %+v\nwant %+v", want.Position, got, want)
	}
}

func compact(tb testing.TB, data []byte) json.RawMessage {
	tb.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}
