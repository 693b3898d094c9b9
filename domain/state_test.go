package domain_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

func TestSession_Apply(t *testing.T) {
	type handoff struct {
		id        uuid.UUID
		status    domain.Status
		claimedBy uuid.UUID
	}
	cases := []struct {
		name    string
		history []domain.Event
		holder  domain.Actor // zero for none
		open    uuid.UUID    // uuid.Nil for none
		want    []handoff    // oldest first
	}{
		{"no events", nil, domain.Actor{}, uuid.Nil, nil},
		{"parked", []domain.Event{parked(h1, alice, 0)}, alice, h1,
			[]handoff{{h1, domain.StatusOpen, uuid.Nil}}},
		{"claimed", []domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 1)}, bob, uuid.Nil,
			[]handoff{{h1, domain.StatusClaimed, bob.UserID}}},
		{"withdrawn keeps the holder", []domain.Event{escalated(h1, alice, 0), withdrawnBy(h1, alice, 1)}, alice, uuid.Nil,
			[]handoff{{h1, domain.StatusWithdrawn, uuid.Nil}}},
		{"the claimer's own handoff keeps the claimer",
			[]domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 1), escalated(h2, bob, 2)}, bob, h2,
			[]handoff{{h1, domain.StatusClaimed, bob.UserID}, {h2, domain.StatusOpen, uuid.Nil}}},
		{"each claim moves the session",
			[]domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 1), escalated(h2, bob, 2), claimedBy(h2, olga, 3), parked(h3, olga, 4)},
			olga, h3,
			[]handoff{{h1, domain.StatusClaimed, bob.UserID}, {h2, domain.StatusClaimed, olga.UserID}, {h3, domain.StatusOpen, uuid.Nil}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := state(c.history...)
			if s.Version != int64(len(c.history)) {
				t.Errorf("version = %d, want %d", s.Version, len(c.history))
			}
			if s.Holder != c.holder.UserID {
				t.Errorf("holder = %s, want %s", s.Holder, c.holder.UserID)
			}
			open, ok := s.Open()
			if ok != (c.open != uuid.Nil) || (ok && open.ID != c.open) {
				t.Errorf("open handoff = %v (%v), want %s", open, ok, c.open)
			}
			if len(s.Handoffs) != len(c.want) {
				t.Fatalf("%d handoffs, want %d", len(s.Handoffs), len(c.want))
			}
			for i, w := range c.want {
				h := s.Handoffs[i]
				if got := (handoff{h.ID, h.Status, h.ClaimedBy}); got != w {
					t.Errorf("handoff %d = %+v, want %+v", i, got, w)
				}
			}
		})
	}
}

func TestSession_ApplyRecordsEveryField(t *testing.T) {
	s := state(escalated(h1, alice, 0), claimedBy(h1, bob, 7), parked(h2, bob, 8), withdrawnBy(h2, bob, 9))
	first, ok := s.Handoff(h1)
	if !ok {
		t.Fatal("first handoff missing")
	}
	wantFirst := domain.Handoff{
		ID: h1, SessionID: session, AccountID: account, TeamID: team, Intent: domain.IntentEscalate,
		Notes: notes, Priority: domain.PriorityUrgent, Status: domain.StatusClaimed,
		CreatedBy: alice.UserID, CreatedAt: at(0), ClaimedBy: bob.UserID, ClaimedAt: at(7),
	}
	if *first != wantFirst {
		t.Errorf("first handoff:\n got %+v\nwant %+v", *first, wantFirst)
	}
	second, _ := s.Handoff(h2)
	wantSecond := domain.Handoff{
		ID: h2, SessionID: session, AccountID: account, TeamID: team, Intent: domain.IntentPark,
		Notes: notes, Priority: domain.PriorityNormal, Status: domain.StatusWithdrawn,
		CreatedBy: bob.UserID, CreatedAt: at(8), WithdrawnAt: at(9),
	}
	if *second != wantSecond {
		t.Errorf("second handoff:\n got %+v\nwant %+v", *second, wantSecond)
	}
	if _, ok := s.Handoff(h3); ok {
		t.Error("an unknown handoff was found")
	}
}

func TestPriority_Rank(t *testing.T) {
	want := map[domain.Priority]int{domain.PriorityLow: 0, domain.PriorityNormal: 1, domain.PriorityHigh: 2, domain.PriorityUrgent: 3}
	for p, rank := range want {
		if got := p.Rank(); got != rank {
			t.Errorf("%s.Rank() = %d, want %d", p, got, rank)
		}
	}
}
