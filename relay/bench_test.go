package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/loggen"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/relay"
)

var drainEvents = flag.Int("drain.events", 50_000, "events in the backlog BenchmarkDrain drains")

// BenchmarkDrain times the relay draining a backlog: a log of
// -drain.events events (escalations and claims, as commands append
// them) written before the relay starts, published from the start of the
// relay's Run until its checkpoint reaches the log's last event. Each
// round alternates it with the baseline: the same number of messages, built
// beforehand with the relay's subjects, headers and envelopes, published
// to a stream of their own on the same NATS server as the relay publishes
// (asynchronously, each with its Nats-Msg-Id and the id of the one before
// it as Nats-Expected-Last-Msg-Id, one wait for the acknowledgements of
// each 256), with no database: what JetStream alone costs.
//
// It reports events/s of the relay (drain-events/s) and of the baseline
// (baseline-events/s), their ratio (baseline-ratio), and the processor
// time per event of this process (relay and the in-process NATS server:
// proc-cpu-us/event) and of the whole machine, PostgreSQL included
// (machine-cpu-us/event), each beside the baseline's.
func BenchmarkDrain(b *testing.B) {
	n := *drainEvents
	srv := natstest.Start(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*relay.DefaultBatchSize))
	if err != nil {
		b.Fatal(err)
	}
	var relayTime, baseTime time.Duration
	var relayProc, baseProc, relayMachine, baseMachine time.Duration
	var drained int
	for b.Loop() {
		ctx := b.Context()
		url := pgtest.NewDatabase(b)
		pool := pgtest.Pool(b, url, 0)
		events, err := loggen.Postgres(ctx, pool, n, 16)
		if err != nil {
			b.Fatal(err)
		}
		msgs := baselineMessages(b, events)

		cpu, busy := meter()
		took := publishBaseline(b, js, msgs)
		baseTime += took
		p, m := cpu()
		baseProc, baseMachine = baseProc+p, baseMachine+m
		_ = busy

		rnc, err := relay.Connect(srv.URL(), "relay-bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		store := pgstore.New(pool)
		r, err := relay.New(relay.Deps{NATS: rnc, Log: store, Checkpoints: pgviews.New(pool), Locker: leader.NewLocal(), Wake: store.Appended, Logger: slog.New(slog.DiscardHandler)}, relay.Config{})
		if err != nil {
			b.Fatal(err)
		}
		last := events[len(events)-1].Position
		cpu, _ = meter()
		start := time.Now()
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = r.Run(runCtx) })
		for r.Status().Checkpoint < last {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("the relay drained to %d of %d in 5 minutes", r.Status().Checkpoint, last)
			}
			time.Sleep(time.Millisecond)
		}
		relayTime += time.Since(start)
		p, m = cpu()
		relayProc, relayMachine = relayProc+p, relayMachine+m
		stop()
		wg.Wait()
		rnc.Close()
		if st := r.Status(); st.Published != uint64(len(events)) || st.Duplicates != 0 {
			b.Fatalf("the relay published %d events (%d duplicates), want %d", st.Published, st.Duplicates, len(events))
		}
		drained += len(events)
		for _, name := range []string{eventcodec.DefaultNATSStream, baselineStream} {
			if err := js.DeleteStream(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
	}
	perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(drained) }
	b.ReportMetric(float64(drained)/relayTime.Seconds(), "drain-events/s")
	b.ReportMetric(float64(drained)/baseTime.Seconds(), "baseline-events/s")
	b.ReportMetric(baseTime.Seconds()/relayTime.Seconds(), "baseline-ratio")
	b.ReportMetric(perEvent(relayProc), "proc-cpu-us/event")
	b.ReportMetric(perEvent(baseProc), "baseline-proc-cpu-us/event")
	b.ReportMetric(perEvent(relayMachine), "machine-cpu-us/event")
	b.ReportMetric(perEvent(baseMachine), "baseline-machine-cpu-us/event")
}

// meter starts measuring processor time; the function it returns gives
// this process's and the machine's since then.
func meter() (func() (proc, machine time.Duration), bool) {
	proc := ratiobench.ProcessCPU()
	busy, ok := ratiobench.MachineBusy()
	return func() (time.Duration, time.Duration) {
		now, nowOK := ratiobench.MachineBusy()
		if !ok || !nowOK {
			now = busy
		}
		return ratiobench.ProcessCPU() - proc, now - busy
	}, ok
}

// baselineStream is the stream of the baseline's messages.
const baselineStream = "BASELINE"

// baselineMessages returns the messages the relay would publish for
// events, on subjects under "baseline." instead of "handoff.".
func baselineMessages(tb testing.TB, events []eventstore.Event) []*nats.Msg {
	tb.Helper()
	msgs := make([]*nats.Msg, len(events))
	for i, e := range events {
		a, s, err := eventcodec.ParseStreamName(e.Stream)
		if err != nil {
			tb.Fatal(err)
		}
		body, err := json.Marshal(e)
		if err != nil {
			tb.Fatal(err)
		}
		m := nats.NewMsg("baseline." + a.String() + "." + s.String() + "." + e.Type)
		m.Data = body
		m.Header.Set(eventcodec.HeaderEventType, e.Type)
		m.Header.Set(eventcodec.HeaderStream, e.Stream)
		m.Header.Set(eventcodec.HeaderStreamVersion, strconv.FormatInt(e.Version, 10))
		m.Header.Set(eventcodec.HeaderPosition, strconv.FormatInt(e.Position, 10))
		m.Header.Set(eventcodec.HeaderAccount, a.String())
		m.Header.Set(eventcodec.HeaderSession, s.String())
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		if i > 0 {
			m.Header.Set(jetstream.ExpectedLastMsgIDHeader, events[i-1].ID)
		}
		msgs[i] = m
	}
	return msgs
}

// publishBaseline publishes msgs to a new baseline stream, waiting for the
// acknowledgements of each relay.DefaultBatchSize, and returns the time
// that took.
func publishBaseline(tb testing.TB, js jetstream.JetStream, msgs []*nats.Msg) time.Duration {
	tb.Helper()
	ctx := tb.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: baselineStream, Subjects: []string{"baseline.>"},
		Storage: jetstream.FileStorage, Duplicates: relay.DefaultDuplicateWindow}); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	for batch := range slices.Chunk(msgs, relay.DefaultBatchSize) {
		futures := make([]jetstream.PubAckFuture, len(batch))
		for i, m := range batch {
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				tb.Fatal(err)
			}
			futures[i] = f
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatal(err)
			case <-ctx.Done():
				tb.Fatal(ctx.Err())
			}
		}
	}
	return time.Since(start)
}

var lagEscalates = flag.Int("lag.escalates", 4000, "escalates BenchmarkPublishLag makes")

// BenchmarkPublishLag measures the relay's publish lag under the escalate
// load: 16 workers escalate new sessions through the command handler as
// fast as they can (-lag.escalates in all), with the projector and the
// relay running as serve runs them. An event's lag is the time from its
// recorded time (its append) to the time JetStream stored it (the
// message's timestamp in the stream); it reports the lag's p50, p95, p99
// and maximum, the escalates' rate and their own latency (escalate-p50-ms,
// escalate-p99-ms): an event's recorded time is taken before its append
// commits, so the lag includes most of its escalate's latency.
func BenchmarkPublishLag(b *testing.B) {
	const workers = 16
	var lags, appends []time.Duration
	var mu sync.Mutex
	var escalates int
	var took time.Duration
	for b.Loop() {
		ctx := b.Context()
		srv := natstest.Start(b)
		url := pgtest.NewDatabase(b)
		pool := pgtest.Pool(b, url, workers+8)
		store, views := pgstore.New(pool), pgviews.New(pool)
		handler := commands.NewHandler(store, nil)
		nc, err := relay.Connect(srv.URL(), "relay-bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		locker := leader.NewLocal()
		quiet := slog.New(slog.DiscardHandler)
		r, err := relay.New(relay.Deps{NATS: nc, Log: store, Checkpoints: views, Locker: locker, Wake: store.Appended, Logger: quiet}, relay.Config{})
		if err != nil {
			b.Fatal(err)
		}
		projector := projections.NewProjector(store, views, locker, store.Appended, quiet)
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = r.Run(runCtx) })
		wg.Go(func() { _ = projector.Run(runCtx) })

		account, team := uuid.New(), uuid.New()
		var next atomic.Int64
		errs := make([]error, workers)
		start := time.Now()
		var load sync.WaitGroup
		for w := range workers {
			load.Go(func() {
				actor := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
				var mine []time.Duration
				defer func() {
					mu.Lock()
					appends = append(appends, mine...)
					mu.Unlock()
				}()
				for next.Add(1) <= int64(*lagEscalates) {
					t := time.Now()
					cmd := domain.CreateHandoff{Actor: actor, HandoffID: uuid.New(), Intent: domain.IntentEscalate,
						Notes: loggen.Notes, Priority: domain.PriorityHigh, At: handler.Now()}
					if _, err := handler.Execute(ctx, actor, uuid.New(), cmd, commands.Trace{RequestID: "bench"}); err != nil {
						errs[w] = err
						return
					}
					mine = append(mine, time.Since(t))
				}
			})
		}
		load.Wait()
		took += time.Since(start)
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		head, err := store.Head(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ledgertest.WaitUntil(b, time.Minute, "the relay publishes every escalate", func() bool { return r.Status().Checkpoint >= head })
		stop()
		wg.Wait()
		nc.Close()
		lags = append(lags, streamLags(b, srv.URL(), *lagEscalates)...)
		escalates += *lagEscalates
	}
	slices.Sort(lags)
	slices.Sort(appends)
	at := func(d []time.Duration, p float64) float64 {
		return float64(d[int(p*float64(len(d)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(lags, 0.50), "lag-p50-ms")
	b.ReportMetric(at(lags, 0.95), "lag-p95-ms")
	b.ReportMetric(at(lags, 0.99), "lag-p99-ms")
	b.ReportMetric(at(lags, 1), "lag-max-ms")
	b.ReportMetric(at(appends, 0.50), "escalate-p50-ms")
	b.ReportMetric(at(appends, 0.99), "escalate-p99-ms")
	b.ReportMetric(float64(escalates)/took.Seconds(), "escalates/s")
}

// streamLags reads the n messages of the relay's stream and returns, for
// each, the time from its event's recorded time to its storing in the
// stream.
func streamLags(tb testing.TB, natsURL string, n int) []time.Duration {
	tb.Helper()
	ctx := tb.Context()
	js := natstest.JetStream(tb, natsURL)
	c, err := js.OrderedConsumer(ctx, eventcodec.DefaultNATSStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	lags := make([]time.Duration, 0, n)
	for len(lags) < n {
		batch, err := c.Fetch(n-len(lags), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				tb.Fatal(err)
			}
			var e struct {
				RecordedAt time.Time `json:"recorded_at"`
			}
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				tb.Fatal(err)
			}
			lags = append(lags, meta.Timestamp.Sub(e.RecordedAt))
		}
		if err := batch.Error(); err != nil {
			tb.Fatal(err)
		}
	}
	return lags
}
