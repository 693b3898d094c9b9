package domain

import (
	"time"

	"github.com/google/uuid"
)

// Event type names. They are part of the public contract: they are stored,
// published and matched by downstream systems.
const (
	TypeHandoffParked     = "HandoffParked"
	TypeHandoffEscalated  = "HandoffEscalated"
	TypeHandoffClaimed    = "HandoffClaimed"
	TypeHandoffWithdrawn  = "HandoffWithdrawn"
	TypeSessionDataErased = "SessionDataErased"
)

// EventTypes returns every event type name, in the order of a handoff's
// life.
func EventTypes() []string {
	return []string{TypeHandoffParked, TypeHandoffEscalated, TypeHandoffClaimed, TypeHandoffWithdrawn, TypeSessionDataErased}
}

// Event is something that happened to a session, to one of its handoffs.
type Event interface {
	EventType() string
	// Handoff returns the id of the handoff the event creates or changes.
	Handoff() uuid.UUID
}

// HandoffCreated holds what parking and escalating share.
type HandoffCreated struct {
	HandoffID uuid.UUID
	SessionID uuid.UUID
	AccountID uuid.UUID
	TeamID    uuid.UUID
	CreatedBy uuid.UUID
	Notes     string
	// NotesErased says the notes were erased (SessionDataErased) before
	// the event was read: Notes is then empty.
	NotesErased bool
	Priority    Priority
	At          time.Time
}

// HandoffParked: the holder handed the session back to the team queue.
type HandoffParked struct{ HandoffCreated }

// HandoffEscalated: the holder asked a senior to take the session over.
type HandoffEscalated struct{ HandoffCreated }

// HandoffClaimed: a teammate picked the session up and now holds it.
type HandoffClaimed struct {
	HandoffID uuid.UUID
	SessionID uuid.UUID
	ClaimedBy uuid.UUID
	Role      Role
	At        time.Time
}

// HandoffWithdrawn: the holder took back a handoff nobody had claimed.
type HandoffWithdrawn struct {
	HandoffID   uuid.UUID
	SessionID   uuid.UUID
	WithdrawnBy uuid.UUID
	At          time.Time
}

// SessionDataErased: the session's personal data (the notes and client
// addresses its events hold) was erased on request; the events stay, their
// personal data unreadable. It holds no personal data itself.
type SessionDataErased struct {
	SessionID uuid.UUID
	AccountID uuid.UUID
	ErasedBy  uuid.UUID
	Role      Role
	Reason    string
	At        time.Time
}

func (HandoffParked) EventType() string     { return TypeHandoffParked }
func (SessionDataErased) EventType() string { return TypeSessionDataErased }

// Handoff returns uuid.Nil: the erasure concerns every handoff of the
// session.
func (SessionDataErased) Handoff() uuid.UUID { return uuid.Nil }
func (HandoffEscalated) EventType() string   { return TypeHandoffEscalated }
func (HandoffClaimed) EventType() string     { return TypeHandoffClaimed }
func (HandoffWithdrawn) EventType() string   { return TypeHandoffWithdrawn }

func (e HandoffCreated) Handoff() uuid.UUID   { return e.HandoffID }
func (e HandoffClaimed) Handoff() uuid.UUID   { return e.HandoffID }
func (e HandoffWithdrawn) Handoff() uuid.UUID { return e.HandoffID }
