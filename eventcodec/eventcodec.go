// Package eventcodec translates the domain's events to and from the JSON
// stored in the event log and published on NATS, and names the streams they
// live in. The JSON field names are part of the public contract.
package eventcodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// streamPrefix starts the name of every session stream.
const streamPrefix = "session:"

// StreamNameSQL is StreamName as an SQL expression of the columns that
// hold the account and the session (of type uuid on PostgreSQL, lower-case
// text on SQLite, which both concatenate as uuid.UUID.String does), for
// a join on the stream name.
func StreamNameSQL(account, session string) string {
	return "'" + streamPrefix + "' || " + account + " || ':' || " + session
}

// StreamName is the stream of one session of one account. The account is
// part of the name, so two accounts using the same session id never share a
// stream.
func StreamName(account, session uuid.UUID) string {
	return streamPrefix + account.String() + ":" + session.String()
}

// ParseStreamName returns the account and session of a session stream.
func ParseStreamName(stream string) (account, session uuid.UUID, err error) {
	a, s, ok := strings.Cut(strings.TrimPrefix(stream, streamPrefix), ":")
	if !ok || !strings.HasPrefix(stream, streamPrefix) {
		return uuid.Nil, uuid.Nil, fmt.Errorf("not a session stream: %q", stream)
	}
	if account, err = uuid.Parse(a); err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("stream %q: account: %w", stream, err)
	}
	if session, err = uuid.Parse(s); err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("stream %q: session: %w", stream, err)
	}
	return account, session, nil
}

// created is the data of HandoffParked and HandoffEscalated. The log
// stores the notes sealed (NotesSealed, engineer_notes null: see
// SealNotes); a reader that holds the stream's data key shows them as
// engineer_notes, as before they were sealed, and one whose key was
// erased shows engineer_notes null and notes_erased true (OpenNotes).
type created struct {
	HandoffID   uuid.UUID `json:"handoff_id"`
	SessionID   uuid.UUID `json:"session_id"`
	AccountID   uuid.UUID `json:"account_id"`
	TeamID      uuid.UUID `json:"team_id"`
	CreatedBy   uuid.UUID `json:"created_by"`
	Notes       *string   `json:"engineer_notes"`
	NotesSealed string    `json:"engineer_notes_sealed,omitempty"`
	NotesErased bool      `json:"notes_erased,omitempty"`
	Priority    string    `json:"priority"`
	At          time.Time `json:"at"`
}

// erased is the data of SessionDataErased.
type erased struct {
	SessionID uuid.UUID `json:"session_id"`
	AccountID uuid.UUID `json:"account_id"`
	ErasedBy  uuid.UUID `json:"erased_by"`
	Role      string    `json:"role"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

type claimed struct {
	HandoffID uuid.UUID `json:"handoff_id"`
	SessionID uuid.UUID `json:"session_id"`
	ClaimedBy uuid.UUID `json:"claimed_by"`
	Role      string    `json:"role"`
	At        time.Time `json:"at"`
}

type withdrawn struct {
	HandoffID   uuid.UUID `json:"handoff_id"`
	SessionID   uuid.UUID `json:"session_id"`
	WithdrawnBy uuid.UUID `json:"withdrawn_by"`
	At          time.Time `json:"at"`
}

func fromCreated(c domain.HandoffCreated) created {
	v := created{HandoffID: c.HandoffID, SessionID: c.SessionID, AccountID: c.AccountID, TeamID: c.TeamID,
		CreatedBy: c.CreatedBy, NotesErased: c.NotesErased, Priority: string(c.Priority), At: c.At.UTC()}
	if !c.NotesErased {
		v.Notes = &c.Notes
	}
	return v
}

// domain returns the event; notes still sealed (a reader without the
// stream's key) are shown as erased, since they cannot be read.
func (c created) domain() domain.HandoffCreated {
	h := domain.HandoffCreated{
		HandoffID: c.HandoffID, SessionID: c.SessionID, AccountID: c.AccountID, TeamID: c.TeamID,
		CreatedBy: c.CreatedBy, Priority: domain.Priority(c.Priority), At: c.At.UTC(),
	}
	switch {
	case c.Notes != nil && c.NotesSealed == "":
		h.Notes = *c.Notes
	case c.NotesErased || c.NotesSealed != "":
		h.NotesErased = true
	}
	return h
}

// Encode returns an event's type name and JSON data.
func Encode(e domain.Event) (string, []byte, error) {
	var v any
	switch e := e.(type) {
	case domain.HandoffParked:
		v = fromCreated(e.HandoffCreated)
	case domain.HandoffEscalated:
		v = fromCreated(e.HandoffCreated)
	case domain.HandoffClaimed:
		v = claimed{e.HandoffID, e.SessionID, e.ClaimedBy, string(e.Role), e.At.UTC()}
	case domain.HandoffWithdrawn:
		v = withdrawn{e.HandoffID, e.SessionID, e.WithdrawnBy, e.At.UTC()}
	case domain.SessionDataErased:
		v = erased{e.SessionID, e.AccountID, e.ErasedBy, string(e.Role), e.Reason, e.At.UTC()}
	default:
		return "", nil, fmt.Errorf("encode event: unknown type %T", e)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	return e.EventType(), data, nil
}

// ErrUnknownType is matched (errors.Is) by Decode's error for an event type
// this version of the ledger does not know, such as one added by a newer
// version; readers of the log may skip such events.
var ErrUnknownType = errors.New("unknown event type")

// Decode returns the domain event stored with the given type and data.
func Decode(eventType string, data []byte) (domain.Event, error) {
	switch eventType {
	case domain.TypeHandoffParked, domain.TypeHandoffEscalated:
		var c created
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", eventType, err)
		}
		if eventType == domain.TypeHandoffParked {
			return domain.HandoffParked{HandoffCreated: c.domain()}, nil
		}
		return domain.HandoffEscalated{HandoffCreated: c.domain()}, nil
	case domain.TypeHandoffClaimed:
		var c claimed
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", eventType, err)
		}
		return domain.HandoffClaimed{HandoffID: c.HandoffID, SessionID: c.SessionID, ClaimedBy: c.ClaimedBy, Role: domain.Role(c.Role), At: c.At.UTC()}, nil
	case domain.TypeHandoffWithdrawn:
		var w withdrawn
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, fmt.Errorf("decode %s: %w", eventType, err)
		}
		return domain.HandoffWithdrawn{HandoffID: w.HandoffID, SessionID: w.SessionID, WithdrawnBy: w.WithdrawnBy, At: w.At.UTC()}, nil
	case domain.TypeSessionDataErased:
		var e erased
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("decode %s: %w", eventType, err)
		}
		return domain.SessionDataErased{SessionID: e.SessionID, AccountID: e.AccountID, ErasedBy: e.ErasedBy,
			Role: domain.Role(e.Role), Reason: e.Reason, At: e.At.UTC()}, nil
	}
	return nil, fmt.Errorf("decode event %q: %w", eventType, ErrUnknownType)
}

// HasNotes reports whether events of eventType hold engineer notes.
func HasNotes(eventType string) bool {
	return eventType == domain.TypeHandoffParked || eventType == domain.TypeHandoffEscalated
}

// SealNotes returns the data of an event of eventType with its notes
// replaced by seal(notes), stored as engineer_notes_sealed with
// engineer_notes null; data of a type without notes is returned as it is.
func SealNotes(eventType string, data []byte, seal func(notes string) (string, error)) ([]byte, error) {
	if !HasNotes(eventType) {
		return data, nil
	}
	var c created
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("seal notes of %s: %w", eventType, err)
	}
	if c.Notes == nil || c.NotesSealed != "" {
		return data, nil // nothing to seal
	}
	sealed, err := seal(*c.Notes)
	if err != nil {
		return nil, err
	}
	c.Notes, c.NotesSealed = nil, sealed
	return json.Marshal(c)
}

// OpenNotes returns the data of an event of eventType as readers see it:
// sealed notes are replaced by open(sealed) as engineer_notes, or, when
// open reports them erased (ok false), by engineer_notes null and
// notes_erased true. Data without sealed notes is returned as it is.
func OpenNotes(eventType string, data []byte, open func(sealed string) (notes string, ok bool, err error)) ([]byte, error) {
	if !HasNotes(eventType) {
		return data, nil
	}
	var c created
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("open notes of %s: %w", eventType, err)
	}
	if c.NotesSealed == "" {
		return data, nil
	}
	notes, ok, err := open(c.NotesSealed)
	if err != nil {
		return nil, err
	}
	c.NotesSealed = ""
	if ok {
		c.Notes = &notes
	} else {
		c.Notes, c.NotesErased = nil, true
	}
	return json.Marshal(c)
}
