package domain

import "github.com/google/uuid"

// Session is the state of one session's stream, folded from its events.
type Session struct {
	ID        uuid.UUID
	AccountID uuid.UUID
	// Version is the number of events folded so far; 0 means no stream.
	Version int64
	// Holder is the creator of the first handoff and, after each claim,
	// the claimer.
	Holder   uuid.UUID
	Handoffs []Handoff // oldest first
}

// NewSession returns the empty state of a session of an account.
func NewSession(account, session uuid.UUID) *Session {
	return &Session{ID: session, AccountID: account}
}

// Open returns the session's open handoff, if any.
func (s *Session) Open() (*Handoff, bool) {
	for i := range s.Handoffs {
		if s.Handoffs[i].Status == StatusOpen {
			return &s.Handoffs[i], true
		}
	}
	return nil, false
}

// Handoff returns the handoff with the given id, if the session has it.
func (s *Session) Handoff(id uuid.UUID) (*Handoff, bool) {
	for i := range s.Handoffs {
		if s.Handoffs[i].ID == id {
			return &s.Handoffs[i], true
		}
	}
	return nil, false
}

// Apply folds one event into the state. Events are facts: Apply never
// rejects one.
func (s *Session) Apply(e Event) {
	s.Version++
	switch e := e.(type) {
	case HandoffParked:
		s.create(IntentPark, e.HandoffCreated)
	case HandoffEscalated:
		s.create(IntentEscalate, e.HandoffCreated)
	case HandoffClaimed:
		if h, ok := s.Handoff(e.HandoffID); ok {
			h.Status, h.ClaimedBy, h.ClaimedAt = StatusClaimed, e.ClaimedBy, e.At
		}
		s.Holder = e.ClaimedBy
	case HandoffWithdrawn:
		if h, ok := s.Handoff(e.HandoffID); ok {
			h.Status, h.WithdrawnAt = StatusWithdrawn, e.At
		}
	case SessionDataErased:
		for i := range s.Handoffs {
			s.Handoffs[i].Notes, s.Handoffs[i].NotesErased = "", true
		}
	}
}

// Erased reports whether every handoff of the session has its notes
// erased, as after a SessionDataErased with no handoff since.
func (s *Session) Erased() bool {
	for _, h := range s.Handoffs {
		if !h.NotesErased {
			return false
		}
	}
	return len(s.Handoffs) > 0
}

func (s *Session) create(intent Intent, e HandoffCreated) {
	if len(s.Handoffs) == 0 {
		s.Holder = e.CreatedBy
	}
	s.Handoffs = append(s.Handoffs, Handoff{
		ID:          e.HandoffID,
		SessionID:   e.SessionID,
		AccountID:   e.AccountID,
		TeamID:      e.TeamID,
		Intent:      intent,
		Notes:       e.Notes,
		NotesErased: e.NotesErased,
		Priority:    e.Priority,
		Status:      StatusOpen,
		CreatedBy:   e.CreatedBy,
		CreatedAt:   e.At,
	})
}
