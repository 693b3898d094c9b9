package asof

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/projections"
)

// recorded returns e as a store would have recorded it at version v of
// the stream of a session of an account, at the given time.
func recorded(tb testing.TB, account, session uuid.UUID, v int64, at time.Time, e domain.Event) eventstore.Event {
	tb.Helper()
	typ, data, err := eventcodec.Encode(e)
	if err != nil {
		tb.Fatal(err)
	}
	return eventstore.Event{ID: uuid.NewString(), Type: typ, Stream: eventcodec.StreamName(account, session), Version: v, Position: v, RecordedAt: at, Data: data}
}

// TestUntil_StopsAtTheFirstLaterEvent checks that the events as of an
// instant are a prefix of the stream: an event recorded at or before the
// instant but after one recorded later is left out, so the fold is a state
// the session really had.
func TestUntil_StopsAtTheFirstLaterEvent(t *testing.T) {
	account, session := uuid.New(), uuid.New()
	t0 := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	h1, h2 := uuid.New(), uuid.New()
	created := func(id uuid.UUID) domain.HandoffCreated {
		return domain.HandoffCreated{HandoffID: id, SessionID: session, AccountID: account, CreatedBy: uuid.New(), Priority: domain.PriorityNormal, At: t0}
	}
	events := []eventstore.Event{
		recorded(t, account, session, 1, t0, domain.HandoffEscalated{HandoffCreated: created(h1)}),
		recorded(t, account, session, 2, t0.Add(2*time.Second), domain.HandoffWithdrawn{HandoffID: h1, SessionID: session, At: t0}),
		recorded(t, account, session, 3, t0.Add(time.Second), domain.HandoffParked{HandoffCreated: created(h2)}),
	}
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{t0.Add(-time.Microsecond), 0},
		{t0, 1},
		{t0.Add(time.Second), 1}, // version 3 was recorded by then, but after version 2
		{t0.Add(2 * time.Second), 3},
	} {
		if got := Until(events, tc.at); len(got) != tc.want {
			t.Errorf("Until(%s) = %d events, want %d", tc.at, len(got), tc.want)
		}
	}
	state, err := Fold(account, session, Until(events, t0.Add(time.Second)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Handoffs) != 1 || state.Handoffs[0].Status != domain.StatusOpen {
		t.Errorf("state as of t0+1s = %+v, want the escalation alone, open", state.Handoffs)
	}
}

// TestFold_CallsEachAndStops checks that Fold shows every event with the
// state after it, stops at each's error, and passes over an event that
// does not decode.
func TestFold_CallsEachAndStops(t *testing.T) {
	account, session, id := uuid.New(), uuid.New(), uuid.New()
	at := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	events := []eventstore.Event{
		recorded(t, account, session, 1, at, domain.HandoffParked{HandoffCreated: domain.HandoffCreated{HandoffID: id, SessionID: session, AccountID: account, At: at}}),
		recorded(t, account, session, 2, at, domain.HandoffWithdrawn{HandoffID: id, SessionID: session, At: at}),
	}
	var seen []domain.Status
	_, err := Fold(account, session, events, func(e eventstore.Event, s *domain.Session, skipped error) error {
		if s.Version != e.Version || skipped != nil {
			t.Errorf("state version %d after event %d, skipped %v", s.Version, e.Version, skipped)
		}
		seen = append(seen, s.Handoffs[0].Status)
		return nil
	})
	if err != nil || !slices.Equal(seen, []domain.Status{domain.StatusOpen, domain.StatusWithdrawn}) {
		t.Errorf("Fold = %v, statuses %v; want open then withdrawn", err, seen)
	}
	stop := errors.New("stop")
	calls := 0
	if _, err := Fold(account, session, events, func(eventstore.Event, *domain.Session, error) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Fold with a failing each = %v after %d calls, want stop after 1", err, calls)
	}
	// A poison event, as the projector skips it: counted, not applied.
	events[1].Data = []byte(`{"handoff_id": 7}`)
	var skips []error
	state, err := Fold(account, session, events, func(_ eventstore.Event, _ *domain.Session, skipped error) error {
		skips = append(skips, skipped)
		return nil
	})
	if err != nil || state.Version != 2 || state.Handoffs[0].Status != domain.StatusOpen || skips[0] != nil || skips[1] == nil {
		t.Errorf("Fold over a poison event = %v, version %d, handoffs %+v, skips %v; want version 2, the park open, the second event skipped",
			err, state.Version, state.Handoffs, skips)
	}
}

// TestPageOf_PagesAsTheStores checks the in-memory keyset pages against
// the order the read-model stores use.
func TestPageOf_PagesAsTheStores(t *testing.T) {
	at := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	state := &domain.Session{}
	for i := range 5 {
		// Two handoffs share a creation time: the id breaks the tie.
		state.Handoffs = append(state.Handoffs, domain.Handoff{ID: uuid.New(), CreatedAt: at.Add(time.Duration(i/2) * time.Second)})
	}
	whole := NewestFirst(state)
	for i := 1; i < len(whole); i++ {
		if projections.HistoryCursor(whole[i-1]).Compare(projections.HistoryCursor(whole[i])) <= 0 {
			t.Fatalf("NewestFirst: %d is not after %d", i-1, i)
		}
	}
	var paged []domain.Handoff
	page := projections.Page{Limit: 2}
	for {
		hs := pageOf(whole, page, projections.HistoryCursor, descending)
		paged = append(paged, hs...)
		if len(hs) < page.Limit {
			break
		}
		c := projections.HistoryCursor(hs[len(hs)-1])
		page.After = &c
	}
	if !slices.Equal(paged, whole) {
		t.Errorf("pages of 2 = %v, want %v", paged, whole)
	}
}
