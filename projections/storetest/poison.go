package storetest

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
)

// This file tests the projector and the rebuild on a store against events
// that cannot be applied: each is skipped and recorded, and never stops
// the read models of everyone.

// Log is an event log a projector tails and reads wait for.
type Log interface {
	eventstore.Store
	projections.Head
	// Appended returns a channel closed at the next append through the
	// log.
	Appended() <-chan struct{}
}

// Ledger is one ledger on a fresh database, for RunProjector.
type Ledger struct {
	Log   Log
	Views projections.Store
	// Refuse makes the database refuse, from now on, every handoff row
	// whose notes are notes.
	Refuse func(tb testing.TB, notes string)
	// BreakCheckpoints makes the database refuse every move of a
	// checkpoint, as in an outage, until the returned function is called.
	BreakCheckpoints func(tb testing.TB) (restore func())
	// Dump returns every column of every handoffs row, ordered by id.
	Dump func(tb testing.TB) string
}

// RunProjector runs the projector's tests against ledgers made by open.
func RunProjector(t *testing.T, open func(tb testing.TB) Ledger) {
	tests := map[string]func(t *testing.T, l Ledger){
		"SkipsPoisonEvents":           testSkipsPoison,
		"RetriesWhileTheStoreIsDown":  testRetriesOutage,
		"ReadsGiveUpWhileItIsStopped": testReadsGiveUp,
		"StallWatchSeesItStopped":     testStallWatch,
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, open(t))
		})
	}
}

// settle bounds how long a test waits for the read models.
const settle = 10 * time.Second

// projector is a running projector of a Ledger, logging to logs.
type projector struct {
	*projections.Projector
	logs *ledgertest.Buffer
	stop func()
}

func startProjector(tb testing.TB, l Ledger) projector {
	tb.Helper()
	logs := &ledgertest.Buffer{}
	p := projections.NewProjector(l.Log, l.Views, leader.NewLocal(), l.Log.Appended, slog.New(slog.NewJSONHandler(logs, nil)))
	return projector{Projector: p, logs: logs, stop: ledgertest.Go(context.Background(), tb, "projector", p.Run)}
}

// appendRaw appends one event of the given type and data, as a faulty or
// older writer might have, and returns it as recorded.
func appendRaw(tb testing.TB, l Ledger, stream, eventType string, data any) eventstore.Event {
	tb.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		tb.Fatal(err)
	}
	recorded, err := l.Log.Append(tb.Context(), stream, eventstore.Any, []eventstore.NewEvent{{Type: eventType, Data: raw}})
	if err != nil {
		tb.Fatalf("append %s: %v", eventType, err)
	}
	return recorded[0]
}

// appendEvent appends a domain event to the stream of its account and
// session.
func appendEvent(tb testing.TB, l Ledger, account, session uuid.UUID, e domain.Event) eventstore.Event {
	tb.Helper()
	eventType, data, err := eventcodec.Encode(e)
	if err != nil {
		tb.Fatal(err)
	}
	return appendRaw(tb, l, eventcodec.StreamName(account, session), eventType, json.RawMessage(data))
}

// testSkipsPoison puts events that cannot be applied among ordinary ones:
// one whose data does not decode, one whose row the store refuses, the
// claim of that handoff (which the read model therefore lacks), and one of
// the nil session, which is a valid id and must be applied. The projector
// must skip the first three, record them with the checkpoint's move, log
// them, and apply every other event; reads must answer; a rebuild must
// skip the same events and give the same tables.
func testSkipsPoison(t *testing.T, l Ledger) {
	const refusedNotes = "a row the store refuses"
	l.Refuse(t, refusedNotes)
	p := startProjector(t, l)
	handler := commands.NewHandler(l.Log, nil)
	reads := projections.CaughtUp(l.Views, l.Log, p, settle)
	account, team := uuid.New(), uuid.New()
	sessions, _ := Stories(t, handler, account, team, 3)

	undecodable := appendRaw(t, l, eventcodec.StreamName(account, uuid.New()), domain.TypeHandoffParked,
		map[string]any{"handoff_id": 42, "engineer_notes": []int{1}})
	refusedSession := uuid.New()
	created := domain.HandoffCreated{HandoffID: uuid.New(), SessionID: refusedSession, AccountID: account, TeamID: team,
		CreatedBy: uuid.New(), Notes: refusedNotes, Priority: domain.PriorityUrgent, At: handler.Now()}
	appendEvent(t, l, account, refusedSession, domain.HandoffParked{HandoffCreated: created})
	claimOfRefused := appendEvent(t, l, account, refusedSession, domain.HandoffClaimed{
		HandoffID: created.HandoffID, SessionID: refusedSession, ClaimedBy: uuid.New(), Role: domain.RoleAdmin, At: handler.Now()})
	nilSession := created
	nilSession.HandoffID, nilSession.SessionID, nilSession.Notes = uuid.New(), uuid.Nil, "the nil session"
	appendEvent(t, l, account, uuid.Nil, domain.HandoffEscalated{HandoffCreated: nilSession})

	more, _ := Stories(t, handler, account, team, 3)
	sessions = append(append(sessions, more...), uuid.Nil)
	AssertHistories(t, handler, reads, account, sessions)
	if got, err := reads.History(t.Context(), account, refusedSession, projections.Page{Limit: projections.MaxPageSize}); err != nil || len(got) != 0 {
		t.Errorf("history of the refused handoff's session = %+v, %v; want none", got, err)
	}

	skips, err := l.Views.Skips(t.Context(), projections.HandoffsProjector)
	if err != nil {
		t.Fatalf("skips: %v", err)
	}
	if skips.Count != 3 || skips.First.Position != undecodable.Position || skips.Last.Position != claimOfRefused.Position {
		t.Fatalf("skips = %+v, want 3 from position %d to %d", skips, undecodable.Position, claimOfRefused.Position)
	}
	first := skips.First
	if first.Projector != projections.HandoffsProjector || first.EventID != undecodable.ID ||
		first.Type != domain.TypeHandoffParked || !strings.Contains(first.Error, "decode") || first.At.IsZero() {
		t.Errorf("first skipped event = %+v, want the undecodable one, %s", first, undecodable.ID)
	}
	for _, id := range []string{undecodable.ID, claimOfRefused.ID} {
		if !loggedError(p.logs, "skipped an event the read models cannot apply", id) {
			t.Errorf("no ERROR log of skipped event %s: %s", id, p.logs.String())
		}
	}

	p.stop() // so that the tables and the skips stay put
	live, liveCheckpoint := l.Dump(t), Checkpoint(t, l.Views)
	ctx, cancel := context.WithTimeout(t.Context(), settle)
	defer cancel()
	if err := projections.Rebuild(ctx, l.Log, l.Views); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if got := l.Dump(t); got != live {
		t.Errorf("rebuilt table differs from the projected one\nrebuilt:   %s\nprojected: %s", got, live)
	}
	wantCheckpoint(t, l.Views, liveCheckpoint)
	rebuilt, err := l.Views.Skips(t.Context(), projections.HandoffsProjector)
	if err != nil {
		t.Fatalf("skips after the rebuild: %v", err)
	}
	if rebuilt.Count != skips.Count || rebuilt.First.EventID != skips.First.EventID || rebuilt.Last.EventID != skips.Last.EventID {
		t.Errorf("skips after the rebuild = %+v, want those of the projector, %+v", rebuilt, skips)
	}
}

// loggedError reports whether logs, JSON lines, hold an ERROR line with
// the message msg about the event id.
func loggedError(logs *ledgertest.Buffer, msg, id string) bool {
	return slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(line string) bool {
		var entry struct {
			Level     string `json:"level"`
			Msg       string `json:"msg"`
			Projector string `json:"projector"`
			Position  int64  `json:"position"`
			EventID   string `json:"event_id"`
			Type      string `json:"type"`
			Err       string `json:"err"`
		}
		err := json.Unmarshal([]byte(line), &entry)
		return err == nil && entry.Level == "ERROR" && entry.Msg == msg && entry.EventID == id &&
			entry.Projector == projections.HandoffsProjector && entry.Position > 0 && entry.Type != "" && entry.Err != ""
	})
}

// testRetriesOutage makes the store refuse every checkpoint move while
// events arrive: the projector must retry, skip nothing, and apply them
// once the store is back.
func testRetriesOutage(t *testing.T, l Ledger) {
	p := startProjector(t, l)
	handler := commands.NewHandler(l.Log, nil)
	reads := projections.CaughtUp(l.Views, l.Log, p, settle)
	account, team := uuid.New(), uuid.New()
	sessions, _ := Stories(t, handler, account, team, 2)
	AssertHistories(t, handler, reads, account, sessions)

	restore := l.BreakCheckpoints(t)
	more, _ := Stories(t, handler, account, team, 2)
	ledgertest.WaitUntil(t, settle, "the projector to fail", func() bool {
		return strings.Contains(p.logs.String(), "projector failed, retrying")
	})
	restore()
	AssertHistories(t, handler, reads, account, append(sessions, more...))
	if skips, err := l.Views.Skips(t.Context(), projections.HandoffsProjector); err != nil || skips.Count != 0 {
		t.Errorf("skips after an outage = %+v, %v; want none", skips, err)
	}
}

// testReadsGiveUp reads through CaughtUp while the projector is stopped
// and the log has moved on: each read must fail, with the code
// EUNAVAILABLE, once its bound has passed.
func testReadsGiveUp(t *testing.T, l Ledger) {
	const bound = 200 * time.Millisecond
	p := startProjector(t, l)
	handler := commands.NewHandler(l.Log, nil)
	reads := projections.CaughtUp(l.Views, l.Log, p, bound)
	account, team := uuid.New(), uuid.New()
	sessions, _ := Stories(t, handler, account, team, 1)
	AssertHistories(t, handler, reads, account, sessions)
	p.stop()
	Stories(t, handler, account, team, 1)
	// A read that hung would end at this context's deadline, with
	// another code.
	ctx, cancel := context.WithTimeout(t.Context(), settle)
	defer cancel()
	if _, err := reads.Queue(ctx, account, team, projections.Page{Limit: projections.MaxPageSize}); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("queue with the projector stopped: err = %v, want code %s", err, domain.EUNAVAILABLE)
	}
	if _, err := reads.History(ctx, account, sessions[0], projections.Page{Limit: projections.MaxPageSize}); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("history with the projector stopped: err = %v, want code %s", err, domain.EUNAVAILABLE)
	}
}

// testStallWatch watches the projector's checkpoint: no stall while the
// log is idle, however long, one once the projector is stopped and the log
// moves on, naming where the checkpoint and the head are, and none again
// once a projector runs.
func testStallWatch(t *testing.T, l Ledger) {
	const after = 200 * time.Millisecond
	watch := projections.NewStallWatch(l.Views, l.Log, projections.HandoffsProjector, after)
	p := startProjector(t, l)
	handler := commands.NewHandler(l.Log, nil)
	reads := projections.CaughtUp(l.Views, l.Log, p, settle)
	account, team := uuid.New(), uuid.New()
	sessions, _ := Stories(t, handler, account, team, 1)
	AssertHistories(t, handler, reads, account, sessions)
	stalled := func() (projections.Stall, bool) {
		stall, ok, err := watch.Check(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return stall, ok
	}
	for range 3 {
		if stall, ok := stalled(); ok {
			t.Fatalf("stall with an idle log: %+v", stall)
		}
		time.Sleep(after)
	}

	p.stop()
	Stories(t, handler, account, team, 1)
	head, err := l.Log.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var stall projections.Stall
	ledgertest.WaitUntil(t, settle, "a stall", func() bool {
		var ok bool
		stall, ok = stalled()
		return ok
	})
	if stall.Head != head || stall.Checkpoint >= head || stall.For < after {
		t.Fatalf("stall = %+v, want the checkpoint behind head %d for at least %s", stall, head, after)
	}

	startProjector(t, l)
	ledgertest.WaitUntil(t, settle, "the stall to clear", func() bool {
		_, ok := stalled()
		return !ok
	})
}
