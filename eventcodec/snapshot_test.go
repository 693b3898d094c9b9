package eventcodec_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
)

// fold returns the state of a session after events.
func fold(account, session uuid.UUID, events []domain.Event) *domain.Session {
	s := domain.NewSession(account, session)
	for _, e := range events {
		s.Apply(e)
	}
	return s
}

// fromSnapshot returns the state of a session loaded as a command loads
// it: a snapshot taken after the first k events, then the rest.
func fromSnapshot(tb testing.TB, account, session uuid.UUID, events []domain.Event, k int) *domain.Session {
	tb.Helper()
	data, err := eventcodec.EncodeSnapshot(fold(account, session, events[:k]))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := eventcodec.DecodeSnapshot(data, account, session, int64(k))
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range events[k:] {
		s.Apply(e)
	}
	return s
}

// withoutClosedNotes is s without the notes of the handoffs that are not
// open, which a snapshot does not keep.
func withoutClosedNotes(s *domain.Session) domain.Session {
	out := *s
	out.Handoffs = make([]domain.Handoff, len(s.Handoffs))
	for i, h := range s.Handoffs {
		if h.Status != domain.StatusOpen {
			h.Notes = ""
		}
		out.Handoffs[i] = h
	}
	return out
}

// TestSnapshot_DecidesAsTheWholeStream plays random commands on a session
// and checks, before each, that the state loaded from a snapshot taken at a
// random point of the stream makes the same decision, with the same events
// or the same error, as the state folded from the whole stream, and that
// the handoff a command acted on is the same in both afterwards.
func TestSnapshot_DecidesAsTheWholeStream(t *testing.T) {
	account, session := uuid.New(), uuid.New()
	team := uuid.New()
	actor := func(acct uuid.UUID, role domain.Role) domain.Actor {
		return domain.Actor{UserID: uuid.New(), AccountID: acct, TeamID: team, Role: role}
	}
	actors := []domain.Actor{
		actor(account, domain.RoleEngineer), actor(account, domain.RoleAdmin), actor(account, domain.RoleOwner),
		actor(account, domain.RoleViewer), actor(uuid.New(), domain.RoleOwner),
	}
	handoffs := make([]uuid.UUID, 8) // few, so that commands reuse ids
	for i := range handoffs {
		handoffs[i] = uuid.New()
	}
	intents := []domain.Intent{domain.IntentPark, domain.IntentEscalate}
	priorities := []domain.Priority{domain.PriorityLow, domain.PriorityNormal, domain.PriorityHigh, domain.PriorityUrgent}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)

	decisions := map[bool]int{}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 11))
		var events []domain.Event
		for step := range 80 {
			full := fold(account, session, events)
			by := actors[rng.IntN(len(actors))]
			id := handoffs[rng.IntN(len(handoffs))]
			if open, ok := full.Open(); ok && rng.IntN(2) == 0 {
				id = open.ID
			}
			at := t0.Add(time.Duration(step) * time.Minute)
			var cmd domain.Command
			switch rng.IntN(3) {
			case 0:
				cmd = domain.CreateHandoff{Actor: by, HandoffID: uuid.New(), Intent: intents[rng.IntN(2)],
					Notes: fmt.Sprintf("notes %d of seed %d", step, seed), Priority: priorities[rng.IntN(4)], At: at}
			case 1:
				cmd = domain.ClaimHandoff{Actor: by, HandoffID: id, At: at}
			default:
				cmd = domain.WithdrawHandoff{Actor: by, HandoffID: id, At: at}
			}
			k := rng.IntN(len(events) + 1)
			snap := fromSnapshot(t, account, session, events, k)
			if got, want := withoutClosedNotes(snap), withoutClosedNotes(full); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: state from a snapshot at %d of %d events:\n got %+v\nwant %+v", seed, step, k, len(events), got, want)
			}
			want, wantErr := domain.Decide(full, cmd)
			got, gotErr := domain.Decide(snap, cmd)
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotErr, wantErr) {
				t.Fatalf("seed %d step %d: %T from a snapshot at %d of %d events: %v, %v; from the stream: %v, %v",
					seed, step, cmd, k, len(events), got, gotErr, want, wantErr)
			}
			decisions[wantErr == nil]++
			if wantErr != nil {
				continue
			}
			for _, e := range want {
				full.Apply(e)
				snap.Apply(e)
			}
			touched := want[len(want)-1].Handoff()
			gotH, _ := snap.Handoff(touched)
			wantH, _ := full.Handoff(touched)
			if !reflect.DeepEqual(gotH, wantH) {
				t.Fatalf("seed %d step %d: the handoff acted on, from a snapshot: %+v; from the stream: %+v", seed, step, gotH, wantH)
			}
			events = append(events, want...)
		}
	}
	if decisions[true] < 1000 || decisions[false] < 1000 {
		t.Fatalf("only %d accepted and %d rejected commands: the test does not explore both", decisions[true], decisions[false])
	}
}

// TestSnapshot_KeepsNotesOfTheOpenHandoffOnly checks that a snapshot of a
// long session stays small: closed handoffs are kept without their notes.
func TestSnapshot_KeepsNotesOfTheOpenHandoffOnly(t *testing.T) {
	account, session := uuid.New(), uuid.New()
	engineer, admin := uuid.New(), uuid.New()
	notes := strings.Repeat("n", domain.MaxNotesLength)
	var events []domain.Event
	for i := range 100 {
		created := domain.HandoffCreated{HandoffID: uuid.New(), SessionID: session, AccountID: account, TeamID: uuid.New(),
			CreatedBy: engineer, Notes: notes, Priority: domain.PriorityHigh, At: time.Now().UTC()}
		events = append(events, domain.HandoffEscalated{HandoffCreated: created})
		if i < 99 {
			events = append(events, domain.HandoffClaimed{HandoffID: created.HandoffID, SessionID: session, ClaimedBy: admin, Role: domain.RoleAdmin, At: time.Now().UTC()})
		}
	}
	state := fold(account, session, events)
	data, err := eventcodec.EncodeSnapshot(state)
	if err != nil {
		t.Fatal(err)
	}
	if limit := domain.MaxNotesLength + 100*500; len(data) > limit {
		t.Errorf("snapshot of 99 closed handoffs and an open one: %d bytes, want at most %d", len(data), limit)
	}
	back, err := eventcodec.DecodeSnapshot(data, account, session, state.Version)
	if err != nil {
		t.Fatal(err)
	}
	if open, ok := back.Open(); !ok || open.Notes != notes {
		t.Errorf("the open handoff lost its notes")
	}
	for _, wrong := range []struct {
		account, session uuid.UUID
		version          int64
	}{{uuid.New(), session, state.Version}, {account, uuid.New(), state.Version}, {account, session, state.Version - 1}} {
		if _, err := eventcodec.DecodeSnapshot(data, wrong.account, wrong.session, wrong.version); !errors.Is(err, eventcodec.ErrSnapshot) {
			t.Errorf("decode as session %s of account %s at version %d: %v, want ErrSnapshot", wrong.session, wrong.account, wrong.version, err)
		}
	}
}
