package domain

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Command is a request to change a session.
type Command interface {
	isCommand()
}

// CreateHandoff parks or escalates a session.
type CreateHandoff struct {
	Actor     Actor
	HandoffID uuid.UUID
	Intent    Intent
	Notes     string
	Priority  Priority
	At        time.Time
}

// ClaimHandoff picks up the session's open handoff.
type ClaimHandoff struct {
	Actor     Actor
	HandoffID uuid.UUID
	At        time.Time
}

// WithdrawHandoff takes back an unclaimed handoff.
type WithdrawHandoff struct {
	Actor     Actor
	HandoffID uuid.UUID
	At        time.Time
}

// EraseSessionData erases the personal data of a session: its notes and
// client addresses.
type EraseSessionData struct {
	Actor  Actor
	Reason string
	At     time.Time
}

// MaxReasonLength bounds an erasure's reason, in bytes.
const MaxReasonLength = 1000

func (EraseSessionData) isCommand() {}
func (CreateHandoff) isCommand()    {}
func (ClaimHandoff) isCommand()     {}
func (WithdrawHandoff) isCommand()  {}

// Decide returns the events a command produces on the given state, or the
// domain error that rejects it. It has no side effects.
func Decide(s *Session, cmd Command) ([]Event, error) {
	switch c := cmd.(type) {
	case CreateHandoff:
		return decideCreate(s, c)
	case ClaimHandoff:
		return decideClaim(s, c)
	case WithdrawHandoff:
		return decideWithdraw(s, c)
	case EraseSessionData:
		return decideErase(s, c)
	}
	return nil, Errorf(EINTERNAL, "unknown command %T", cmd)
}

func decideCreate(s *Session, c CreateHandoff) ([]Event, error) {
	if !c.Actor.Role.CanCommand() {
		return nil, Errorf(EFORBIDDEN, MsgReadOnlyRole)
	}
	if _, err := ParseIntent(string(c.Intent)); err != nil {
		return nil, err
	}
	if _, err := ParsePriority(string(c.Priority)); err != nil || c.Priority == "" {
		return nil, Errorf(EINVALID, msgBadPriority)
	}
	if !validNotes(c.Notes) {
		return nil, Errorf(EINVALID, "engineer_notes must be valid text of at most %d bytes, without NUL characters", MaxNotesLength)
	}
	if c.Actor.AccountID != s.AccountID {
		return nil, Errorf(ENOTFOUND, MsgSessionNotFound)
	}
	if s.Version > 0 && c.Actor.UserID != s.Holder {
		return nil, Errorf(ENOTFOUND, MsgSessionNotFound)
	}
	if _, open := s.Open(); open {
		return nil, Errorf(ECONFLICT, MsgOpenHandoffExist)
	}
	if _, exists := s.Handoff(c.HandoffID); exists {
		return nil, Errorf(ECONFLICT, "Handoff id already used")
	}
	created := HandoffCreated{
		HandoffID: c.HandoffID,
		SessionID: s.ID,
		AccountID: s.AccountID,
		TeamID:    c.Actor.TeamID,
		CreatedBy: c.Actor.UserID,
		Notes:     c.Notes,
		Priority:  c.Priority,
		At:        c.At,
	}
	if c.Intent == IntentEscalate {
		return []Event{HandoffEscalated{created}}, nil
	}
	return []Event{HandoffParked{created}}, nil
}

func decideClaim(s *Session, c ClaimHandoff) ([]Event, error) {
	if !c.Actor.Role.CanClaim() {
		return nil, Errorf(EFORBIDDEN, MsgClaimRoleNeeded)
	}
	h, ok := s.Handoff(c.HandoffID)
	if !ok || c.Actor.AccountID != s.AccountID {
		return nil, Errorf(ENOTFOUND, MsgHandoffNotFound)
	}
	if err := mustBeOpen(h); err != nil {
		return nil, err
	}
	return []Event{HandoffClaimed{
		HandoffID: h.ID,
		SessionID: s.ID,
		ClaimedBy: c.Actor.UserID,
		Role:      c.Actor.Role,
		At:        c.At,
	}}, nil
}

func decideWithdraw(s *Session, c WithdrawHandoff) ([]Event, error) {
	if !c.Actor.Role.CanCommand() {
		return nil, Errorf(EFORBIDDEN, MsgReadOnlyRole)
	}
	if c.Actor.AccountID != s.AccountID || s.Version == 0 || c.Actor.UserID != s.Holder {
		return nil, Errorf(ENOTFOUND, MsgSessionNotFound)
	}
	h, ok := s.Handoff(c.HandoffID)
	if !ok {
		return nil, Errorf(ENOTFOUND, MsgHandoffNotFound)
	}
	if err := mustBeOpen(h); err != nil {
		return nil, err
	}
	return []Event{HandoffWithdrawn{
		HandoffID:   h.ID,
		SessionID:   s.ID,
		WithdrawnBy: c.Actor.UserID,
		At:          c.At,
	}}, nil
}

// decideErase erases a session of the actor's account: an owner or admin
// may; others get EFORBIDDEN, and a session the account does not have
// ENOTFOUND. The reason says why, without personal data: it is kept in
// the log for good.
func decideErase(s *Session, c EraseSessionData) ([]Event, error) {
	if !c.Actor.Role.CanErase() {
		return nil, Errorf(EFORBIDDEN, MsgEraseRoleNeeded)
	}
	if c.Actor.AccountID != s.AccountID || s.Version == 0 {
		return nil, Errorf(ENOTFOUND, MsgSessionNotFound)
	}
	reason := strings.TrimSpace(c.Reason)
	if reason == "" || len(c.Reason) > MaxReasonLength || !utf8.ValidString(c.Reason) || strings.ContainsRune(c.Reason, 0) {
		return nil, Errorf(EINVALID, "reason must be non-empty text of at most %d bytes, without NUL characters", MaxReasonLength)
	}
	return []Event{SessionDataErased{
		SessionID: s.ID,
		AccountID: s.AccountID,
		ErasedBy:  c.Actor.UserID,
		Role:      c.Actor.Role,
		Reason:    c.Reason,
		At:        c.At,
	}}, nil
}

// mustBeOpen says why a handoff that is not the session's open one cannot
// be acted on.
func mustBeOpen(h *Handoff) error {
	switch h.Status {
	case StatusClaimed:
		return &ClaimedError{ClaimedBy: h.ClaimedBy, ClaimedAt: h.ClaimedAt}
	case StatusWithdrawn:
		return Errorf(ECONFLICT, MsgHandoffWithdrawn)
	}
	return nil
}

// validNotes accepts UTF-8 text of at most MaxNotesLength bytes without
// NUL, which PostgreSQL's text and jsonb types cannot hold.
func validNotes(notes string) bool {
	return len(notes) <= MaxNotesLength && utf8.ValidString(notes) && !strings.ContainsRune(notes, 0)
}
