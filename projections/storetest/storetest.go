// Package storetest is the contract every projections.Store must meet:
// checkpoints moved by compare-and-set together with the read-model
// changes, queue order and scoping, history order and scoping, and resets
// that readers do not see until they commit, attempts undone on their own,
// and skipped events recorded with the checkpoint. Each implementation runs
// it from its own tests with Run, and runs the projector on it, against
// events that cannot be applied and a store that fails, with RunProjector.
//
// It also helps tests that build read models from a real log: Stories
// plays commands through a handler, AssertHistories checks the read model
// against the log, WatchLowest watches a count while a rebuild runs.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
)

// Run runs the contract tests against stores made by open, which must return
// a new, empty store each time it is called.
func Run(t *testing.T, open func(tb testing.TB) projections.Store) {
	tests := map[string]func(t *testing.T, s projections.Store){
		"Checkpoint_ZeroBeforeFirstUpdate":  testCheckpointZero,
		"Update_StoresChangesAndCheckpoint": testUpdateStores,
		"Update_RefusesStaleFrom":           testUpdateRefusesStale,
		"Update_RefusesMovingBack":          testUpdateRefusesBack,
		"Update_RollsBackWhenFnFails":       testUpdateRollsBack,
		"Update_ConcurrentOneWins":          testUpdateConcurrent,
		"Tx_ReadsItsOwnWrites":              testTxReadsOwnWrites,
		"Tx_LargeBatch":                     testTxLargeBatch,
		"PutHandoff_Replaces":               testPutReplaces,
		"PutHandoff_KeepsNilUUIDs":          testPutNilUUIDs,
		"AddHandoffs_StoresWhatPutStores":   testAddHandoffs,
		"Queue_OrdersEscalationsFirst":      testQueueOrder,
		"Queue_OnlyOpenOfAccountAndTeam":    testQueueScope,
		"History_NewestFirst":               testHistoryOrder,
		"History_OtherAccountSeesNothing":   testHistoryScope,
		"Reset_InvisibleUntilCommit":        testResetInvisible,
		"Queue_Pages":                       testQueuePages,
		"AccountQueue_Pages":                testAccountQueuePages,
		"Queue_PageAfterVanishedHandoff":    testPageAfterVanishedHandoff,
		"History_Pages":                     testHistoryPages,
		"Attempt_UndoesOnlyTheFailedOne":    testAttempt,
		"Skip_RecordedWithTheCheckpoint":    testSkip,
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, open(t))
		})
	}
}

// name is the checkpoint the tests move.
const name = projections.HandoffsProjector

// base is the creation time of the handoffs the tests make, unless they say
// otherwise; stores keep microseconds, in UTC.
var base = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

// scope is an account and a team in it.
type scope struct{ account, team uuid.UUID }

func newScope() scope { return scope{uuid.New(), uuid.New()} }

// handoff returns an open handoff of a new session of sc.
func (sc scope) handoff(intent domain.Intent, priority domain.Priority, createdAt time.Time) domain.Handoff {
	return domain.Handoff{
		ID: uuid.New(), SessionID: uuid.New(), AccountID: sc.account, TeamID: sc.team,
		Intent: intent, Notes: "notes for " + string(intent), Priority: priority, Status: domain.StatusOpen,
		CreatedBy: uuid.New(), CreatedAt: createdAt,
	}
}

func claimed(h domain.Handoff, at time.Time) domain.Handoff {
	h.Status, h.ClaimedBy, h.ClaimedAt = domain.StatusClaimed, uuid.New(), at
	return h
}

func withdrawn(h domain.Handoff, at time.Time) domain.Handoff {
	h.Status, h.WithdrawnAt = domain.StatusWithdrawn, at
	return h
}

// put stores handoffs in one Update that moves the checkpoint on by one.
func put(tb testing.TB, s projections.Store, handoffs ...domain.Handoff) {
	tb.Helper()
	from := Checkpoint(tb, s)
	if err := s.Update(tb.Context(), leader.Fence{}, name, from, from+1, putAll(tb.Context(), handoffs, from+1)); err != nil {
		tb.Fatalf("update: %v", err)
	}
}

func putAll(ctx context.Context, handoffs []domain.Handoff, position int64) func(projections.Tx) error {
	return func(tx projections.Tx) error {
		for _, h := range handoffs {
			if err := tx.PutHandoff(ctx, h, position); err != nil {
				return err
			}
		}
		return nil
	}
}

// Checkpoint returns the stored checkpoint of the handoffs projector.
func Checkpoint(tb testing.TB, s projections.Store) int64 {
	tb.Helper()
	pos, err := s.Checkpoint(tb.Context(), name)
	if err != nil {
		tb.Fatalf("checkpoint: %v", err)
	}
	return pos
}

func wantCheckpoint(tb testing.TB, s projections.Store, want int64) {
	tb.Helper()
	if got := Checkpoint(tb, s); got != want {
		tb.Errorf("checkpoint = %d, want %d", got, want)
	}
}

func queue(tb testing.TB, s projections.Store, sc scope) []domain.Handoff {
	tb.Helper()
	return Queue(tb, s, sc.account, sc.team)
}

func history(tb testing.TB, s projections.Store, account, session uuid.UUID) []domain.Handoff {
	tb.Helper()
	return History(tb, s, account, session)
}

// wantHandoffs fails tb unless got and want hold equal handoffs in the same
// order.
func wantHandoffs(tb testing.TB, what string, got, want []domain.Handoff) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("%s: %d handoffs, want %d\ngot:  %s\nwant: %s", what, len(got), len(want), describe(got), describe(want))
		return
	}
	for i := range got {
		if !Equal(got[i], want[i]) {
			tb.Errorf("%s: handoff %d differs\ngot:  %+v\nwant: %+v", what, i, got[i], want[i])
		}
	}
}

// Equal reports whether two handoffs have the same fields, comparing times
// as instants.
func Equal(a, b domain.Handoff) bool {
	times := a.CreatedAt.Equal(b.CreatedAt) && a.ClaimedAt.Equal(b.ClaimedAt) && a.WithdrawnAt.Equal(b.WithdrawnAt)
	a.CreatedAt, a.ClaimedAt, a.WithdrawnAt = time.Time{}, time.Time{}, time.Time{}
	b.CreatedAt, b.ClaimedAt, b.WithdrawnAt = time.Time{}, time.Time{}, time.Time{}
	return times && a == b
}

func describe(hs []domain.Handoff) string {
	out := ""
	for _, h := range hs {
		out += fmt.Sprintf("[%s %s %s %s %s] ", h.ID.String()[:8], h.Intent, h.Priority, h.Status, h.CreatedAt.Format(time.RFC3339Nano))
	}
	return out
}

func testCheckpointZero(t *testing.T, s projections.Store) {
	wantCheckpoint(t, s, 0)
}

func testUpdateStores(t *testing.T, s projections.Store) {
	sc := newScope()
	h := sc.handoff(domain.IntentPark, domain.PriorityHigh, base)
	if err := s.Update(t.Context(), leader.Fence{}, name, 0, 7, putAll(t.Context(), []domain.Handoff{h}, 7)); err != nil {
		t.Fatalf("update: %v", err)
	}
	wantCheckpoint(t, s, 7)
	wantHandoffs(t, "history", history(t, s, sc.account, h.SessionID), []domain.Handoff{h})

	c := claimed(h, base.Add(time.Minute))
	if err := s.Update(t.Context(), leader.Fence{}, name, 7, 9, putAll(t.Context(), []domain.Handoff{c}, 9)); err != nil {
		t.Fatalf("second update: %v", err)
	}
	wantCheckpoint(t, s, 9)
	wantHandoffs(t, "history after claim", history(t, s, sc.account, h.SessionID), []domain.Handoff{c})
	// Checkpoints of different names are independent.
	other, err := s.Checkpoint(t.Context(), "other")
	if err != nil || other != 0 {
		t.Errorf("checkpoint of another name = %d, %v; want 0", other, err)
	}
}

func testUpdateRefusesStale(t *testing.T, s projections.Store) {
	sc := newScope()
	h := sc.handoff(domain.IntentPark, domain.PriorityNormal, base)
	put(t, s, h)
	stale := sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, base)
	cases := []struct {
		what       string
		name       string
		from, to   int64
		checkpoint int64
	}{
		{"from 0 after the first update", name, 0, 5, 1},
		{"from behind the checkpoint", name, 0, 1, 1},
		{"from ahead of the checkpoint", name, 2, 5, 1},
		{"from past 0 where no checkpoint exists", "other", 3, 5, 0},
	}
	for _, c := range cases {
		err := s.Update(t.Context(), leader.Fence{}, c.name, c.from, c.to, putAll(t.Context(), []domain.Handoff{stale, claimed(h, base)}, c.to))
		if !errors.Is(err, projections.ErrStaleCheckpoint) {
			t.Errorf("%s: err = %v, want ErrStaleCheckpoint", c.what, err)
		}
		if pos, err := s.Checkpoint(t.Context(), c.name); err != nil || pos != c.checkpoint {
			t.Errorf("%s: checkpoint %q = %d, %v; want %d unchanged", c.what, c.name, pos, err, c.checkpoint)
		}
	}
	wantHandoffs(t, "queue", queue(t, s, sc), []domain.Handoff{h})
	wantHandoffs(t, "history of the refused handoff", history(t, s, sc.account, stale.SessionID), nil)
}

func testUpdateRefusesBack(t *testing.T, s projections.Store) {
	put(t, s)
	put(t, s)
	if err := s.Update(t.Context(), leader.Fence{}, name, 2, 1, putAll(t.Context(), nil, 1)); err == nil {
		t.Errorf("moving the checkpoint from 2 back to 1 succeeded")
	}
	wantCheckpoint(t, s, 2)
}

func testUpdateRollsBack(t *testing.T, s projections.Store) {
	sc := newScope()
	h := sc.handoff(domain.IntentPark, domain.PriorityNormal, base)
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), leader.Fence{}, name, 0, 3, func(tx projections.Tx) error {
		if err := tx.PutHandoff(t.Context(), h, 3); err != nil {
			return err
		}
		return fmt.Errorf("projecting: %w", errBoom)
	})
	if !errors.Is(err, errBoom) {
		t.Errorf("err = %v, want fn's error", err)
	}
	wantCheckpoint(t, s, 0)
	wantHandoffs(t, "queue after the failed update", queue(t, s, sc), nil)
	// The checkpoint can still move from where it was.
	put(t, s, h)
	wantCheckpoint(t, s, 1)
}

// testUpdateConcurrent has several writers try to move the checkpoint from
// the same position at once, round after round: exactly one may win each
// round, and only its changes may be stored.
func testUpdateConcurrent(t *testing.T, s projections.Store) {
	const writers, rounds = 8, 15
	sc := newScope()
	for round := range rounds {
		from := int64(round)
		handoffs := make([]domain.Handoff, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			handoffs[w] = sc.handoff(domain.IntentPark, domain.PriorityNormal, base.Add(time.Duration(round)*time.Second))
			wg.Go(func() {
				errs[w] = s.Update(t.Context(), leader.Fence{}, name, from, from+1, putAll(t.Context(), handoffs[w:w+1], from+1))
			})
		}
		wg.Wait()
		won := 0
		for w, err := range errs {
			switch {
			case err == nil:
				won++
				wantHandoffs(t, "winner's history", history(t, s, sc.account, handoffs[w].SessionID), handoffs[w:w+1])
			case errors.Is(err, projections.ErrStaleCheckpoint):
				wantHandoffs(t, "loser's history", history(t, s, sc.account, handoffs[w].SessionID), nil)
			default:
				t.Errorf("round %d writer %d: %v", round, w, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d writers moved the checkpoint from %d, want 1", round, won, from)
		}
		wantCheckpoint(t, s, from+1)
	}
	if got := len(queue(t, s, sc)); got != rounds {
		t.Errorf("queue has %d handoffs after %d rounds, want %d", got, rounds, rounds)
	}
}

func testTxReadsOwnWrites(t *testing.T, s projections.Store) {
	sc := newScope()
	h := sc.handoff(domain.IntentEscalate, domain.PriorityLow, base)
	w := withdrawn(h, base.Add(time.Hour))
	err := s.Update(t.Context(), leader.Fence{}, name, 0, 1, func(tx projections.Tx) error {
		if _, found, err := tx.Handoff(t.Context(), h.ID); err != nil || found {
			return fmt.Errorf("handoff before put: found %v, err %v", found, err)
		}
		if err := tx.PutHandoff(t.Context(), h, 1); err != nil {
			return err
		}
		got, found, err := tx.Handoff(t.Context(), h.ID)
		if err != nil || !found || !Equal(got, h) {
			return fmt.Errorf("handoff after put: %+v, found %v, err %v; want %+v", got, found, err, h)
		}
		if err := tx.PutHandoff(t.Context(), w, 1); err != nil {
			return err
		}
		got, _, err = tx.Handoff(t.Context(), h.ID)
		if err != nil || !Equal(got, w) {
			return fmt.Errorf("handoff after second put: %+v, err %v; want %+v", got, err, w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testTxLargeBatch puts more handoffs in one Update than a store is likely
// to hold back, then claims each, reading it back first, so that some reads
// find rows already written and others rows still held back.
func testTxLargeBatch(t *testing.T, s projections.Store) {
	const n = 1200
	sc := newScope()
	created := make([]domain.Handoff, n)
	for i := range created {
		created[i] = sc.handoff(domain.IntentEscalate, domain.PriorityHigh, base.Add(time.Duration(i)*time.Second))
	}
	want := make([]domain.Handoff, 0, n/2)
	claims := map[int]domain.Handoff{}
	err := s.Update(t.Context(), leader.Fence{}, name, 0, 1, func(tx projections.Tx) error {
		if err := putAll(t.Context(), created, 1)(tx); err != nil {
			return err
		}
		for i, h := range created {
			got, found, err := tx.Handoff(t.Context(), h.ID)
			if err != nil || !found || !Equal(got, h) {
				return fmt.Errorf("handoff %d: %+v, found %v, err %v; want %+v", i, got, found, err, h)
			}
			if i%2 == 1 {
				want = append(want, h)
				continue
			}
			claims[i] = claimed(got, base.Add(time.Hour))
			if err := tx.PutHandoff(t.Context(), claims[i], 1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "queue", queue(t, s, sc), want)
	for i := 0; i < n; i += 50 { // a sample of the claimed ones
		wantHandoffs(t, "history", history(t, s, sc.account, created[i].SessionID), []domain.Handoff{claims[i]})
	}
}

func testPutReplaces(t *testing.T, s projections.Store) {
	sc := newScope()
	h := sc.handoff(domain.IntentPark, domain.PriorityNormal, base)
	put(t, s, h)
	c := claimed(h, base.Add(time.Minute))
	put(t, s, c)
	wantHandoffs(t, "history", history(t, s, sc.account, h.SessionID), []domain.Handoff{c})
	wantHandoffs(t, "queue", queue(t, s, sc), nil)
}

// testPutNilUUIDs stores a handoff whose ids are all the nil UUID, a
// valid UUID: it must be stored and read back like any other, not taken
// for a missing value (which the store would refuse, or never match).
func testPutNilUUIDs(t *testing.T, s projections.Store) {
	nobody := scope{uuid.Nil, uuid.Nil}
	h := nobody.handoff(domain.IntentEscalate, domain.PriorityHigh, base)
	h.ID, h.SessionID, h.CreatedBy = uuid.Nil, uuid.Nil, uuid.Nil
	put(t, s, h)
	wantHandoffs(t, "queue", queue(t, s, nobody), []domain.Handoff{h})
	wantHandoffs(t, "history", history(t, s, uuid.Nil, uuid.Nil), []domain.Handoff{h})
	c := claimed(h, base.Add(time.Minute))
	put(t, s, c)
	wantHandoffs(t, "history after the claim", history(t, s, uuid.Nil, uuid.Nil), []domain.Handoff{c})
	wantHandoffs(t, "queue after the claim", queue(t, s, nobody), nil)
}

// testAddHandoffs writes, after a Reset, handoffs in bulk, many more than
// one statement of them: open, claimed and withdrawn ones, one with nil
// ids, notes with quotes, tabs and non-ASCII text. The queue and the
// history must answer them as PutHandoff's, and a duplicate id must fail
// the whole write and leave the store as it was.
func testAddHandoffs(t *testing.T, s projections.Store) {
	sc := newScope()
	old := sc.handoff(domain.IntentPark, domain.PriorityLow, base)
	put(t, s, old)
	var rows []projections.HandoffRow
	session := uuid.New()
	for i := range 250 {
		h := sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, base.Add(time.Duration(i)*time.Second))
		h.SessionID, h.Notes = session, fmt.Sprintf("notes %d: \"quoted\"\tcafé ✓", i)
		switch i % 3 {
		case 1:
			h = claimed(h, base.Add(time.Hour))
		case 2:
			h = withdrawn(h, base.Add(time.Hour))
		}
		rows = append(rows, projections.HandoffRow{Handoff: h, Position: int64(i + 2)})
	}
	nobody := scope{uuid.Nil, uuid.Nil}
	nilIDs := nobody.handoff(domain.IntentPark, domain.PriorityNormal, base)
	nilIDs.ID, nilIDs.SessionID, nilIDs.CreatedBy = uuid.Nil, uuid.Nil, uuid.Nil
	rows = append(rows, projections.HandoffRow{Handoff: nilIDs, Position: 300})

	from := Checkpoint(t, s)
	dup := append(slices.Clone(rows), rows[7])
	err := s.Update(t.Context(), leader.Fence{}, name, from, 300, func(tx projections.Tx) error {
		if err := tx.Reset(t.Context()); err != nil {
			return err
		}
		return tx.AddHandoffs(t.Context(), dup)
	})
	if err == nil {
		t.Fatal("AddHandoffs of a duplicate id succeeded")
	}
	wantCheckpoint(t, s, from)
	wantHandoffs(t, "history after the failed write", history(t, s, sc.account, old.SessionID), []domain.Handoff{old})

	err = s.Update(t.Context(), leader.Fence{}, name, from, 300, func(tx projections.Tx) error {
		if err := tx.Reset(t.Context()); err != nil {
			return err
		}
		return tx.AddHandoffs(t.Context(), rows)
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	wantHandoffs(t, "history of the reset handoff", history(t, s, sc.account, old.SessionID), nil)
	var open, all []domain.Handoff
	for _, r := range slices.Backward(rows[:250]) { // the history is newest first
		all = append(all, r.Handoff)
	}
	for _, r := range rows[:250] { // the queue, oldest first
		if r.Handoff.Status == domain.StatusOpen {
			open = append(open, r.Handoff)
		}
	}
	got, err := s.History(t.Context(), sc.account, session, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "history", got, all)
	gotQueue, err := s.Queue(t.Context(), sc.account, sc.team, projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "queue", gotQueue, open)
	wantHandoffs(t, "history of nil ids", history(t, s, uuid.Nil, uuid.Nil), []domain.Handoff{nilIDs})
}

func testQueueOrder(t *testing.T, s projections.Store) {
	sc := newScope()
	at := func(minutes int) time.Time { return base.Add(time.Duration(minutes) * time.Minute) }
	var (
		escUrgentNew = sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, at(9))
		escUrgentOld = sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, at(1))
		escLow       = sc.handoff(domain.IntentEscalate, domain.PriorityLow, at(0))
		parkUrgent   = sc.handoff(domain.IntentPark, domain.PriorityUrgent, at(8))
		parkHigh     = sc.handoff(domain.IntentPark, domain.PriorityHigh, at(7))
		parkNormalA  = sc.handoff(domain.IntentPark, domain.PriorityNormal, at(2))
		parkNormalB  = sc.handoff(domain.IntentPark, domain.PriorityNormal, at(2))
		parkNormal   = sc.handoff(domain.IntentPark, domain.PriorityNormal, at(3))
		parkLow      = sc.handoff(domain.IntentPark, domain.PriorityLow, at(-5))
	)
	// Same priority and time: the id decides, so the order is stable.
	if parkNormalB.ID.String() < parkNormalA.ID.String() {
		parkNormalA, parkNormalB = parkNormalB, parkNormalA
	}
	want := []domain.Handoff{escUrgentOld, escUrgentNew, escLow, parkUrgent, parkHigh, parkNormalA, parkNormalB, parkNormal, parkLow}
	put(t, s, parkLow, parkNormal, escLow, parkNormalB, parkUrgent)
	put(t, s, escUrgentNew, parkHigh, parkNormalA, escUrgentOld)
	wantHandoffs(t, "queue", queue(t, s, sc), want)
}

func testQueueScope(t *testing.T, s projections.Store) {
	sc := newScope()
	otherTeam := scope{sc.account, uuid.New()}
	otherAccount := scope{uuid.New(), sc.team}
	open := sc.handoff(domain.IntentPark, domain.PriorityNormal, base)
	put(t, s,
		open,
		claimed(sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, base), base),
		withdrawn(sc.handoff(domain.IntentEscalate, domain.PriorityUrgent, base), base),
		otherTeam.handoff(domain.IntentEscalate, domain.PriorityUrgent, base),
		otherAccount.handoff(domain.IntentEscalate, domain.PriorityUrgent, base),
	)
	wantHandoffs(t, "queue", queue(t, s, sc), []domain.Handoff{open})
	if got := queue(t, s, scope{sc.account, uuid.New()}); len(got) != 0 {
		t.Errorf("queue of an unknown team has %d handoffs", len(got))
	}
}

// sessionHandoffs returns handoffs of one session: claimed ones and an open
// one, created a minute apart.
func sessionHandoffs(sc scope, n int) []domain.Handoff {
	session := uuid.New()
	out := make([]domain.Handoff, n)
	for i := range out {
		h := sc.handoff(domain.IntentPark, domain.PriorityNormal, base.Add(time.Duration(i)*time.Minute))
		h.SessionID = session
		if i < n-1 {
			h = claimed(h, h.CreatedAt.Add(time.Second))
		}
		out[i] = h
	}
	return out
}

func testHistoryOrder(t *testing.T, s projections.Store) {
	sc := newScope()
	hs := sessionHandoffs(sc, 4)
	put(t, s, hs[2], hs[0], hs[3], hs[1])
	put(t, s, sessionHandoffs(sc, 2)...) // another session
	wantHandoffs(t, "history", history(t, s, sc.account, hs[0].SessionID), []domain.Handoff{hs[3], hs[2], hs[1], hs[0]})
	if got := history(t, s, sc.account, uuid.New()); len(got) != 0 {
		t.Errorf("history of an unknown session has %d handoffs", len(got))
	}
}

func testHistoryScope(t *testing.T, s projections.Store) {
	sc := newScope()
	hs := sessionHandoffs(sc, 2)
	// Another account uses the same session id.
	theirs := newScope().handoff(domain.IntentEscalate, domain.PriorityHigh, base)
	theirs.SessionID = hs[0].SessionID
	put(t, s, hs[0], hs[1], theirs)
	wantHandoffs(t, "our history", history(t, s, sc.account, hs[0].SessionID), []domain.Handoff{hs[1], hs[0]})
	wantHandoffs(t, "their history", history(t, s, theirs.AccountID, hs[0].SessionID), []domain.Handoff{theirs})
	wantHandoffs(t, "a third account's history", history(t, s, uuid.New(), hs[0].SessionID), nil)
}

// testResetInvisible checks that a reader outside a rebuild's
// transaction keeps seeing the old rows, without waiting, while the
// transaction has reset them, and sees the new rows once it commits.
func testResetInvisible(t *testing.T, s projections.Store) {
	sc := newScope()
	old := sc.handoff(domain.IntentPark, domain.PriorityNormal, base)
	put(t, s, old)
	rebuilt := claimed(old, base.Add(time.Minute))
	err := s.Update(t.Context(), leader.Fence{}, name, 1, 2, func(tx projections.Tx) error {
		if err := tx.Reset(t.Context()); err != nil {
			return err
		}
		if _, found, err := tx.Handoff(t.Context(), old.ID); err != nil || found {
			return fmt.Errorf("handoff after reset, inside the transaction: found %v, err %v", found, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		during, err := s.Queue(ctx, sc.account, sc.team, projections.Page{Limit: pageSize})
		if err != nil {
			return fmt.Errorf("read the queue during the reset: %w", err)
		}
		if len(during) != 1 || !Equal(during[0], old) {
			return fmt.Errorf("a reader saw the reset before it committed: queue %s", describe(during))
		}
		return tx.PutHandoff(t.Context(), rebuilt, 2)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "history after the rebuild", history(t, s, sc.account, old.SessionID), []domain.Handoff{rebuilt})
	wantCheckpoint(t, s, 2)
}

// testAttempt runs attempts in one Update: the failed one's changes are
// undone, the transaction goes on, and the others' changes commit.
func testAttempt(t *testing.T, s projections.Store) {
	sc := newScope()
	kept, undone := sc.handoff(domain.IntentPark, domain.PriorityNormal, base), sc.handoff(domain.IntentEscalate, domain.PriorityHigh, base)
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), leader.Fence{}, name, 0, 2, func(tx projections.Tx) error {
		failed, err := tx.Attempt(t.Context(), func() error {
			if err := tx.PutHandoff(t.Context(), undone, 1); err != nil {
				return err
			}
			return errBoom
		})
		if err != nil || !errors.Is(failed, errBoom) {
			return fmt.Errorf("failing attempt = %v, %v; want boom, nil", failed, err)
		}
		if _, found, err := tx.Handoff(t.Context(), undone.ID); err != nil || found {
			return fmt.Errorf("handoff of the failed attempt: found %v, err %v", found, err)
		}
		failed, err = tx.Attempt(t.Context(), func() error { return tx.PutHandoff(t.Context(), kept, 2) })
		if failed != nil || err != nil {
			return fmt.Errorf("attempt = %v, %v; want nil, nil", failed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "queue", queue(t, s, sc), []domain.Handoff{kept})
	wantCheckpoint(t, s, 2)
}

// testSkip records skipped events: they are kept only when the Update
// commits, summarised per projector, and deleted by Reset.
func testSkip(t *testing.T, s projections.Store) {
	skips := func() projections.Skips {
		t.Helper()
		sum, err := s.Skips(t.Context(), name)
		if err != nil {
			t.Fatalf("skips: %v", err)
		}
		return sum
	}
	if sum := skips(); sum != (projections.Skips{}) {
		t.Fatalf("skips before any = %+v, want none", sum)
	}
	skipped := func(position int64) projections.Skipped {
		return projections.Skipped{Projector: name, Position: position, EventID: fmt.Sprintf("event-%d", position),
			Type: domain.TypeHandoffParked, Error: "decode: bad data ✗", At: base.Add(time.Duration(position) * time.Second)}
	}
	skipAll := func(ss ...projections.Skipped) func(projections.Tx) error {
		return func(tx projections.Tx) error {
			for _, k := range ss {
				if err := tx.Skip(t.Context(), k); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if err := s.Update(t.Context(), leader.Fence{}, name, 0, 5, skipAll(skipped(3))); err != nil {
		t.Fatalf("update: %v", err)
	}
	if sum := skips(); sum.Count != 1 || sum.First != skipped(3) || sum.Last != skipped(3) {
		t.Fatalf("skips = %+v, want the one of position 3", sum)
	}
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), leader.Fence{}, name, 5, 8, func(tx projections.Tx) error {
		if err := skipAll(skipped(7))(tx); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("failing update: %v", err)
	}
	if err := s.Update(t.Context(), leader.Fence{}, name, 5, 9, skipAll(skipped(9), skipped(6))); err != nil {
		t.Fatalf("update: %v", err)
	}
	if sum := skips(); sum.Count != 3 || sum.First != skipped(3) || sum.Last != skipped(9) {
		t.Fatalf("skips = %+v, want 3, from position 3 to 9", sum)
	}
	if other, err := s.Skips(t.Context(), "other"); err != nil || other.Count != 0 {
		t.Errorf("skips of another projector = %+v, %v; want none", other, err)
	}
	if err := s.Update(t.Context(), leader.Fence{}, name, 9, 10, func(tx projections.Tx) error { return tx.Reset(t.Context()) }); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if sum := skips(); sum.Count != 0 {
		t.Errorf("skips after a reset = %+v, want none", sum)
	}
}
