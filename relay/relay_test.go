package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/relay"
)

func TestRelay_PublishesEveryEventOnceInOrder(t *testing.T) {
	e := newEnv(t)
	e.handoffs(10) // before the relay starts: the backlog of a first run
	r := e.newRelay(leader.NewLocal(), testConfig())
	e.run(r)
	e.waitPublished()

	e.handoffs(11) // while it runs: woken by the appends
	want := e.waitPublished()

	st := r.Status()
	if !st.Leading || st.Degraded || st.LastError != nil {
		t.Errorf("status %+v, want leading and healthy", st)
	}
	if st.Published != uint64(len(want)) || st.Duplicates != 0 {
		t.Errorf("published %d (%d duplicates), want %d and none", st.Published, st.Duplicates, len(want))
	}
	e.waitUntil("the backlog is empty", func() bool {
		st := r.Status()
		return st.Backlog == 0 && st.Checkpoint == want[len(want)-1].Position
	})
	if st.MaxLag <= 0 || st.MaxLag > waitLimit {
		t.Errorf("max publish lag %v, want a positive lag below %v", st.MaxLag, waitLimit)
	}
}

func TestRelay_NeverPublishesRolledBackAppend(t *testing.T) {
	e := newEnv(t)
	e.run(e.newRelay(leader.NewLocal(), testConfig()))
	e.handoffs(1)
	e.waitPublished()

	// Four transactions take positions in this order; they end in the
	// reverse order, and the first is rolled back.
	ctx := t.Context()
	pool := e.newPool()
	rolledBack, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rolledBack.Rollback(context.Background())
	lateCommit, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lateCommit.Rollback(context.Background())
	stream := eventcodec.StreamName(e.accounts[0], e.accounts[1])
	// The hashes chain nothing: the relay publishes events as they are.
	insert := `INSERT INTO events (id, stream, version, type, data, metadata, prev_hash, hash)
VALUES ($1, $2, $3, 'HandoffParked', '{"n": 1}', '{}', sha256(''), sha256(''))`
	rolledBackID := ulid.Make().String()
	if _, err := rolledBack.Exec(ctx, insert, rolledBackID, stream, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := lateCommit.Exec(ctx, insert, ulid.Make().String(), stream, 2); err != nil {
		t.Fatal(err)
	}
	e.handoffs(2) // committed at once, at higher positions

	if err := lateCommit.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rolledBack.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.handoffs(1)

	want := e.waitPublished() // the stream is exactly the committed log
	if len(want) != 2+1+4+2 {
		t.Fatalf("log holds %d events, want 9", len(want))
	}
	for _, ev := range want {
		if ev.ID == rolledBackID {
			t.Fatal("the rolled-back event is in the log")
		}
	}
}

func TestRelay_DrainsBacklogInOrderAfterNATSOutage(t *testing.T) {
	t.Run("RelayConnection", func(t *testing.T) { testOutage(t) })
	// A connection that queues publishes while disconnected and sends them
	// on reconnect: the expected-last-id chain keeps them in order.
	t.Run("BufferingConnection", func(t *testing.T) { testOutage(t, nats.ReconnectBufSize(nats.DefaultReconnectBufSize)) })
}

func testOutage(t *testing.T, opts ...nats.Option) {
	e := newEnv(t)
	r := e.newRelay(leader.NewLocal(), testConfig(), opts...)
	e.run(r)
	e.handoffs(5)
	e.waitPublished()

	// Commands keep appending, from another goroutine, through the outage.
	writing, stopWriting := context.WithCancel(t.Context())
	var (
		wg       sync.WaitGroup
		writeErr error
		written  int
	)
	wg.Go(func() {
		for ; writing.Err() == nil; written++ {
			if err := e.handoff(t.Context(), e.accounts[written%len(e.accounts)], written); err != nil {
				writeErr = err
				return
			}
		}
	})
	appended := func(n int) func() bool {
		head := e.logEvents()
		return func() bool { return len(e.logEvents()) >= len(head)+n }
	}

	e.waitUntil("commands append while NATS is up", appended(10))
	e.nats.Stop()
	e.waitUntil("commands append while NATS is down", appended(20))
	e.waitUntil("the relay reports degraded with a backlog", func() bool {
		st := r.Status()
		return st.Degraded && st.LastError != nil && st.Backlog > 0
	})
	e.nats.Restart(t)
	e.waitUntil("commands append after NATS is back", appended(10))
	stopWriting()
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("a command failed during the outage: %v", writeErr)
	}

	want := e.waitPublished()
	e.waitUntil("the relay recovers", func() bool { return !r.Status().Degraded })
	if st := r.Status(); st.Backlog != 0 || st.Checkpoint != want[len(want)-1].Position {
		t.Errorf("status after the outage %+v, want checkpoint %d and no backlog", st, want[len(want)-1].Position)
	}
}

func TestRelay_StartsWhileNATSIsDown(t *testing.T) {
	e := newEnv(t)
	e.nats.Stop()
	r := e.newRelay(leader.NewLocal(), testConfig())
	e.run(r)
	e.handoffs(4)
	e.waitUntil("the relay reports degraded with the backlog", func() bool {
		st := r.Status()
		return st.Leading && st.Degraded && st.Backlog > 0 && st.LastError != nil
	})
	e.nats.Restart(t)
	e.waitPublished()
}

// TestRelay_CrashBetweenPublishAndCheckpointPublishesNoDuplicate stops a
// relay after JetStream acknowledged a batch and before the checkpoint
// recorded it, and restarts one only after the stream's duplicate window
// has passed, when JetStream would no longer drop a repeat: the successor
// must take the batch as published from the stream itself.
func TestRelay_CrashBetweenPublishAndCheckpointPublishesNoDuplicate(t *testing.T) {
	e := newEnv(t)
	e.handoffs(10)
	want := e.logEvents()

	cfg := testConfig()
	cfg.BatchSize = 100
	cfg.DuplicateWindow = time.Second
	first := e.newRelay(leader.NewLocal(), cfg)
	ctx, crash := context.WithCancel(context.Background())
	first.SetBeforeCheckpoint(crash)
	stop := e.runUntil(ctx, first)
	<-ctx.Done()
	stop()
	if pos := e.checkpoint(); pos != 0 {
		t.Fatalf("checkpoint after the crash = %d, want 0 (the crash came before it)", pos)
	}
	e.assertStream(want)
	time.Sleep(cfg.DuplicateWindow + 500*time.Millisecond)

	second := e.newRelay(leader.NewLocal(), cfg)
	e.run(second)
	last := want[len(want)-1].Position
	e.waitUntil("the successor's checkpoint reaches the stream's last event", func() bool { return e.checkpoint() == last })
	e.handoffs(2)
	all := e.waitPublished()
	if st := second.Status(); st.Published != uint64(len(all)-len(want)) || st.Duplicates != 0 {
		t.Fatalf("successor published %d events (%d duplicates), want only the %d new ones", st.Published, st.Duplicates, len(all)-len(want))
	}
}

// TestRelay_RepublishesFromTheFirstRefusedEvent has JetStream refuse
// events while the relay has batches in flight: a message another client
// publishes into the stream as the relay records its first batch makes the
// events sent after it fail their expected-last-message check. Every move
// of the checkpoint must stay within the events the stream holds, and the
// relay must publish again from the first refused event, so that the
// stream ends with every event once, in order, besides the foreign one.
func TestRelay_RepublishesFromTheFirstRefusedEvent(t *testing.T) {
	e := newEnv(t)
	e.handoffs(40) // 80 events: a dozen batches of 7, four in flight
	log := e.logEvents()
	r := e.newRelay(leader.NewLocal(), testConfig())
	var foreign, moves int
	var problems []string
	r.SetCheckpointHook(func(to int64) {
		moves++
		ctx := context.Background()
		stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
		if err != nil {
			problems = append(problems, err.Error())
			return
		}
		info, err := stream.Info(ctx)
		if err != nil {
			problems = append(problems, err.Error())
			return
		}
		upTo := slices.IndexFunc(log, func(ev eventstore.Event) bool { return ev.Position == to }) + 1
		if held := int(info.State.Msgs) - foreign; upTo == 0 || held < upTo {
			problems = append(problems, fmt.Sprintf("checkpoint moves to %d, event %d of the log, while the stream holds %d events", to, upTo, held))
		}
		if foreign == 0 {
			e.publishForeign(eventcodec.Subject(uuid.NewString(), uuid.NewString(), "HandoffClaimed"), nil)
			foreign++
		}
	})
	e.run(r)
	e.waitUntil("the relay publishes the log", func() bool { return e.checkpoint() == log[len(log)-1].Position })
	e.assertStreamAmong(log, 1)
	if len(problems) > 0 {
		t.Fatalf("after %d checkpoint moves:\n%s", moves, strings.Join(problems, "\n"))
	}
	if st := r.Status(); st.Foreign != 1 || st.Duplicates != 0 {
		t.Errorf("status %+v, want the foreign message counted and no duplicates", st)
	}
}

// TestRelay_SkipsForeignMessages puts into the stream messages that no
// relay of this log published, as another client with the right to
// publish could: one with no ledger headers, ones that claim the position
// of an event not yet published under another id, and one that claims a
// position no log has. Some land while
// the relay runs, between two of its publishes, and some while it is
// stopped, beyond its checkpoint. The relay must log and count each once,
// skip it, and go on publishing every event once, in order: a forged
// Ledger-Position or Nats-Msg-Id must not make it skip an event.
func TestRelay_SkipsForeignMessages(t *testing.T) {
	e := newEnv(t)
	e.handoffs(2)
	var logs ledgertest.Buffer
	r := e.newRelayLogging(slog.New(slog.NewTextHandler(&logs, nil)))
	stop := e.run(r)
	published := e.waitPublished()
	last := published[len(published)-1]

	// While the relay runs.
	e.publishForeign(eventcodec.Subject(uuid.NewString(), uuid.NewString(), "HandoffClaimed"), nil)
	e.publishForeign(eventcodec.Subject(uuid.NewString(), uuid.NewString(), "HandoffClaimed"), map[string]string{
		eventcodec.HeaderPosition: strconv.FormatInt(last.Position+1, 10), jetstream.MsgIDHeader: ulid.Make().String(),
	})
	e.handoffs(2)
	e.waitUntil("the relay publishes after the foreign messages", func() bool { return e.checkpoint() == e.lastPosition() })

	// While it is stopped: the next events are not published yet.
	stop()
	e.handoffs(2)
	log := e.logEvents()
	next := log[len(log)-1]
	a, s, err := eventcodec.ParseStreamName(next.Stream)
	if err != nil {
		t.Fatal(err)
	}
	e.publishForeign(eventcodec.Subject(a.String(), s.String(), next.Type), map[string]string{
		eventcodec.HeaderPosition: strconv.FormatInt(next.Position, 10), jetstream.MsgIDHeader: ulid.Make().String(),
	})
	e.publishForeign(eventcodec.Subject(uuid.NewString(), uuid.NewString(), "HandoffParked"), map[string]string{
		eventcodec.HeaderPosition: "-1", jetstream.MsgIDHeader: ulid.Make().String(),
	})
	r = e.newRelayLogging(slog.New(slog.NewTextHandler(&logs, nil)))
	e.run(r)
	e.handoffs(1)
	want := e.logEvents()
	e.waitUntil("the relay publishes the log", func() bool { return e.checkpoint() == want[len(want)-1].Position })

	e.assertStreamAmong(want, 4)
	if st := r.Status(); st.Foreign != 2 || st.Degraded {
		t.Errorf("the second relay's status %+v, want the 2 foreign messages it found counted and not degraded", st)
	}
	if n := strings.Count(logs.String(), "is not an event of this log"); n != 4 {
		t.Errorf("the relays logged %d foreign messages, want each of the 4 once; their log:\n%s", n, logs.String())
	}
}

// TestRelay_LeavesAnExistingStreamAsItIs starts the relay on a stream an
// operator made with other settings than the relay's flags: the relay
// publishes to it and changes none of them (a shorter max age from a
// restart's flags would delete events).
func TestRelay_LeavesAnExistingStreamAsItIs(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	made := jetstream.StreamConfig{
		Name: eventcodec.DefaultNATSStream, Subjects: []string{eventcodec.SubjectPrefix + ".>"},
		MaxAge: 24 * time.Hour, Duplicates: 3 * time.Hour, Storage: jetstream.MemoryStorage,
	}
	if _, err := e.js.CreateStream(ctx, made); err != nil {
		t.Fatal(err)
	}
	e.run(e.newRelay(leader.NewLocal(), testConfig()))
	e.handoffs(3)
	e.waitPublished()
	stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		t.Fatal(err)
	}
	have := stream.CachedInfo().Config
	if have.MaxAge != made.MaxAge || have.Duplicates != made.Duplicates || have.Storage != made.Storage {
		t.Fatalf("stream config after the relay ran: max age %v, duplicates %v, storage %v; want %v, %v, %v as made",
			have.MaxAge, have.Duplicates, have.Storage, made.MaxAge, made.Duplicates, made.Storage)
	}
}

// TestRelay_SaysWhenTheStreamLacksPublishedEvents takes published events
// away from the stream while no relay runs (the stream made again empty, or
// restored from a copy that ends before the checkpoint): the relay that
// starts next must say that the stream lacks them, then publish the new
// events.
func TestRelay_SaysWhenTheStreamLacksPublishedEvents(t *testing.T) {
	for name, takeAway := range map[string]func(t *testing.T, e *env) int{
		"DeletedAndMadeAgain": func(t *testing.T, e *env) int {
			if err := e.js.DeleteStream(t.Context(), eventcodec.DefaultNATSStream); err != nil {
				t.Fatal(err)
			}
			return 0
		},
		"RestoredFromAnOlderCopy": func(t *testing.T, e *env) int {
			stream, err := e.js.Stream(t.Context(), eventcodec.DefaultNATSStream)
			if err != nil {
				t.Fatal(err)
			}
			older := e.fetchAll(t.Context(), stream, 2)
			if err := e.js.DeleteStream(t.Context(), eventcodec.DefaultNATSStream); err != nil {
				t.Fatal(err)
			}
			if _, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: eventcodec.DefaultNATSStream, Subjects: []string{eventcodec.SubjectPrefix + ".>"}}); err != nil {
				t.Fatal(err)
			}
			for _, m := range older {
				copied := nats.NewMsg(m.Subject())
				copied.Header, copied.Data = m.Headers(), m.Data()
				if _, err := e.js.PublishMsg(t.Context(), copied); err != nil {
					t.Fatal(err)
				}
			}
			return len(older)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			stop := e.run(e.newRelay(leader.NewLocal(), testConfig()))
			e.handoffs(2)
			e.waitPublished()
			stop()
			kept := takeAway(t, e)

			var logs ledgertest.Buffer
			nc, err := relay.Connect(e.nats.URL(), "relay-test", e.logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			r, err := relay.New(relay.Deps{NATS: nc, Log: e.store, Checkpoints: e.views, Locker: leader.NewLocal(), Wake: e.store.Appended, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, testConfig())
			if err != nil {
				t.Fatal(err)
			}
			e.run(r)
			e.handoffs(1)
			all := e.logEvents()
			e.waitUntil("the relay publishes the new events", func() bool { return e.checkpoint() == all[len(all)-1].Position })
			if !strings.Contains(logs.String(), "the stream lacks events the relay has published") || !strings.Contains(logs.String(), "the same --nats-url") {
				t.Fatalf("the relay did not say the stream lacks published events, and what to do; its log:\n%s", logs.String())
			}
			if problem := r.Status().StreamProblem; !strings.Contains(problem, "the same --nats-url") {
				t.Fatalf("Status().StreamProblem = %q, want it to say what to do", problem)
			}
			stream, err := e.js.Stream(t.Context(), eventcodec.DefaultNATSStream)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := stream.CachedInfo().State.Msgs, uint64(kept+2); got != want {
				t.Fatalf("stream holds %d messages, want %d: those kept and the 2 new events", got, want)
			}
		})
	}
}

func TestRelay_TwoRelaysPublishOnceAndFailOver(t *testing.T) {
	e := newEnv(t)
	// Two processes: each its own pool, locker and NATS connection.
	relays := []*relay.Relay{
		e.newRelay(e.newLocker(), testConfig()),
		e.newRelay(e.newLocker(), testConfig()),
	}
	stops := []func(){e.run(relays[0]), e.run(relays[1])}
	e.handoffs(12)
	e.waitPublished()

	var leaderIdx int
	e.waitUntil("exactly one relay leads", func() bool {
		a, b := relays[0].Status().Leading, relays[1].Status().Leading
		if b {
			leaderIdx = 1
		}
		return a != b
	})
	standby := relays[1-leaderIdx]

	stops[leaderIdx]()
	killed := time.Now()
	e.waitUntil("the standby takes over", func() bool { return standby.Status().Leading })
	if took := time.Since(killed); took > 5*time.Second {
		t.Errorf("takeover took %v, want a few seconds at most", took)
	}
	e.handoffs(12)
	want := e.waitPublished()

	published := relays[0].Status().Published + relays[1].Status().Published
	duplicates := relays[0].Status().Duplicates + relays[1].Status().Duplicates
	if published != uint64(len(want)) || duplicates != 0 {
		t.Errorf("the relays published %d events (%d duplicates), want each of the %d once", published, duplicates, len(want))
	}
}

// TestRelay_DeposedRelayCannotMoveTheCheckpoint lets a relay publish a
// batch, then, before it moves its checkpoint, ends its lease at the
// server, as when its process froze past the lease's expiry, and has
// another process take the lease. The deposed relay's fenced checkpoint
// move must be refused, and the relay must stop; the successor finds the
// batch in the stream, so every event is in the stream once.
func TestRelay_DeposedRelayCannotMoveTheCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.handoffs(10)
	want := e.logEvents()

	// The first relay renews too seldom to notice the loss by itself, and
	// the successor keeps its lease however slow the machine.
	slow := pgleader.Config{TTL: time.Minute, RenewInterval: 30 * time.Second}
	unaware, err := pgleader.New(e.newPool(), e.logger, slow)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pgleader.New(e.newPool(), e.logger, slow)
	if err != nil {
		t.Fatal(err)
	}
	var logs ledgertest.Buffer
	first := e.newRelayWith(unaware, testConfig(), slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil)))
	published, resume := make(chan struct{}), make(chan struct{})
	first.SetBeforeCheckpoint(sync.OnceFunc(func() {
		close(published)
		<-resume
	}))
	stop := e.run(first)
	select {
	case <-published:
	case <-time.After(waitLimit):
		t.Fatal("the first relay published nothing")
	}
	if _, err := e.newPool().Exec(t.Context(), `UPDATE leader_leases SET expires_at = now() WHERE name = $1`, relay.Name); err != nil {
		t.Fatalf("expire the lease: %v", err)
	}
	successor, err := other.Acquire(t.Context(), relay.Name)
	if err != nil {
		t.Fatal(err)
	}
	close(resume)
	e.waitUntil("the deposed relay gives up", func() bool { return strings.Contains(logs.String(), "relay deposed") })
	if pos := e.checkpoint(); pos != 0 {
		t.Fatalf("checkpoint after the deposed relay's move = %d, want 0", pos)
	}
	stop()
	successor.Release()

	second := e.newRelay(e.newLocker(), testConfig())
	e.run(second)
	e.waitUntil("the successor's checkpoint reaches the log's end", func() bool { return e.checkpoint() == want[len(want)-1].Position })
	e.assertStream(want)
	// The deposed relay published its first batch, perhaps more (it sends
	// batches ahead of their acknowledgements): the successor found them
	// in the stream and published none of them again.
	if st := second.Status(); st.Published > uint64(len(want)-testConfig().BatchSize) || st.Duplicates != 0 {
		t.Fatalf("successor published %d events (%d duplicates), want at most the %d after the deposed relay's first batch, and none twice",
			st.Published, st.Duplicates, len(want)-testConfig().BatchSize)
	}
}

func TestNew_RejectsInvalidConfig(t *testing.T) {
	for name, cfg := range map[string]relay.Config{
		"MaxAgeBelowWindow": {MaxAge: time.Minute, DuplicateWindow: time.Hour},
		"NegativeReplicas":  {Replicas: -1},
		"NegativeBatch":     {BatchSize: -5},
		"BackoffsReversed":  {MinBackoff: time.Minute, MaxBackoff: time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := relay.New(relay.Deps{}, cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestParseStorage(t *testing.T) {
	for s, want := range map[string]jetstream.StorageType{"file": jetstream.FileStorage, "memory": jetstream.MemoryStorage} {
		if got, err := relay.ParseStorage(s); err != nil || got != want {
			t.Errorf("ParseStorage(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := relay.ParseStorage("disk"); err == nil {
		t.Error("ParseStorage accepted disk")
	}
}
