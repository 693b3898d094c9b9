package domain

import (
	"time"

	"github.com/google/uuid"
)

// Role is what a user may do within an account.
type Role string

// Roles: the first four from least to most privileged; the auditor
// stands apart, reading everything of its account and changing nothing.
const (
	RoleViewer   Role = "viewer"
	RoleEngineer Role = "engineer"
	RoleAdmin    Role = "admin"
	RoleOwner    Role = "owner"
	RoleAuditor  Role = "auditor"
	// RoleOperator is whoever runs `ledgerd erase` on the server: it
	// erases, and is never a token's role (ParseRole refuses it).
	RoleOperator Role = "operator"
)

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleEngineer, RoleAdmin, RoleOwner, RoleAuditor:
		return r, nil
	}
	return "", Errorf(EINVALID, "role must be one of viewer, engineer, admin, owner, auditor")
}

// CanClaim reports whether the role may pick up a handoff.
func (r Role) CanClaim() bool {
	return r == RoleEngineer || r == RoleAdmin || r == RoleOwner
}

// CanCommand reports whether the role may give commands at all: every
// role but the auditor's, which only reads.
func (r Role) CanCommand() bool {
	return r != RoleAuditor
}

// CanErase reports whether the role may erase a session's personal data.
func (r Role) CanErase() bool {
	return r == RoleAdmin || r == RoleOwner || r == RoleOperator
}

// CanAudit reports whether the role may read the event log of its account
// and the queue of every team of it.
func (r Role) CanAudit() bool {
	return r == RoleAuditor || r == RoleAdmin || r == RoleOwner
}

// Intent says why a session is handed off.
type Intent string

// Intents.
const (
	IntentPark     Intent = "park"
	IntentEscalate Intent = "escalate"
)

// ParseIntent validates an intent.
func ParseIntent(s string) (Intent, error) {
	switch i := Intent(s); i {
	case IntentPark, IntentEscalate:
		return i, nil
	}
	return "", Errorf(EINVALID, "intent must be one of park, escalate")
}

// Priority orders the team queue.
type Priority string

// Priorities, lowest first.
const (
	PriorityLow    Priority = "low"
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
	PriorityUrgent Priority = "urgent"
)

// msgBadPriority rejects a priority that is not one of the four.
const msgBadPriority = "priority must be one of low, normal, high, urgent"

// ParsePriority validates a priority; the empty string means normal.
func ParsePriority(s string) (Priority, error) {
	switch p := Priority(s); p {
	case "":
		return PriorityNormal, nil
	case PriorityLow, PriorityNormal, PriorityHigh, PriorityUrgent:
		return p, nil
	}
	return "", Errorf(EINVALID, msgBadPriority)
}

// Rank is the priority's place in the queue: higher ranks come first.
func (p Priority) Rank() int {
	switch p {
	case PriorityLow:
		return 0
	case PriorityHigh:
		return 2
	case PriorityUrgent:
		return 3
	}
	return 1
}

// Status is where a handoff stands.
type Status string

// Statuses.
const (
	StatusOpen      Status = "open"
	StatusClaimed   Status = "claimed"
	StatusWithdrawn Status = "withdrawn"
)

// Actor is the authenticated user behind a command.
type Actor struct {
	UserID    uuid.UUID
	AccountID uuid.UUID
	TeamID    uuid.UUID
	Role      Role
}

// MaxNotesLength bounds engineer notes, in bytes.
const MaxNotesLength = 10000

// Handoff is one park or escalation of a session as folded from events.
type Handoff struct {
	ID        uuid.UUID
	SessionID uuid.UUID
	AccountID uuid.UUID
	TeamID    uuid.UUID
	Intent    Intent
	Notes     string
	// NotesErased says the notes were erased: Notes is empty.
	NotesErased bool
	Priority    Priority
	Status      Status
	CreatedBy   uuid.UUID
	CreatedAt   time.Time
	ClaimedBy   uuid.UUID // uuid.Nil until claimed
	ClaimedAt   time.Time // zero until claimed
	WithdrawnAt time.Time // zero unless withdrawn
}
