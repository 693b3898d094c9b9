package eventcodec

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// snapshotFormat is the version of the snapshot encoding. A snapshot of
// another format is refused, and its reader folds the stream instead: bump
// it whenever the encoding, or what domain.Session.Apply folds, changes.
//
// Format 2 holds the open handoffs' notes in the form the command handler
// gives them, sealed under the session's data key (see commands).
const snapshotFormat = 2

// ErrSnapshot is matched (errors.Is) by DecodeSnapshot's error for data
// that is not a snapshot of this format of the given session.
var ErrSnapshot = errors.New("unusable snapshot")

type snapshot struct {
	Format    int               `json:"format"`
	AccountID uuid.UUID         `json:"account_id"`
	SessionID uuid.UUID         `json:"session_id"`
	Version   int64             `json:"version"`
	Holder    uuid.UUID         `json:"holder"`
	Handoffs  []snapshotHandoff `json:"handoffs"`
}

type snapshotHandoff struct {
	ID          uuid.UUID `json:"id"`
	SessionID   uuid.UUID `json:"session_id"`
	AccountID   uuid.UUID `json:"account_id"`
	TeamID      uuid.UUID `json:"team_id"`
	Intent      string    `json:"intent"`
	Notes       string    `json:"engineer_notes,omitempty"`
	NotesErased bool      `json:"notes_erased,omitempty"`
	Priority    string    `json:"priority"`
	Status      string    `json:"status"`
	CreatedBy   uuid.UUID `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	ClaimedBy   uuid.UUID `json:"claimed_by,omitzero"`
	ClaimedAt   time.Time `json:"claimed_at,omitzero"`
	WithdrawnAt time.Time `json:"withdrawn_at,omitzero"`
}

// EncodeSnapshot returns the stored form of a session's state. It is
// compact: a handoff that is no longer open keeps every field but its
// notes, which no decision reads and no command answers with (a command
// answers with the handoff it acted on, which was open). A state decoded
// from it therefore makes the same decisions and answers as the state it
// was made from.
func EncodeSnapshot(s *domain.Session) ([]byte, error) {
	snap := snapshot{
		Format: snapshotFormat, AccountID: s.AccountID, SessionID: s.ID, Version: s.Version, Holder: s.Holder,
		Handoffs: make([]snapshotHandoff, len(s.Handoffs)),
	}
	for i, h := range s.Handoffs {
		sh := snapshotHandoff{
			ID: h.ID, SessionID: h.SessionID, AccountID: h.AccountID, TeamID: h.TeamID,
			Intent: string(h.Intent), NotesErased: h.NotesErased, Priority: string(h.Priority), Status: string(h.Status),
			CreatedBy: h.CreatedBy, CreatedAt: h.CreatedAt.UTC(),
			ClaimedBy: h.ClaimedBy, ClaimedAt: h.ClaimedAt.UTC(), WithdrawnAt: h.WithdrawnAt.UTC(),
		}
		if h.Status == domain.StatusOpen {
			sh.Notes = h.Notes
		}
		snap.Handoffs[i] = sh
	}
	data, err := json.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of session %s: %w", s.ID, err)
	}
	return data, nil
}

// DecodeSnapshot returns the state stored by EncodeSnapshot, which must be
// that of the given session of the given account at the given version;
// otherwise its error matches ErrSnapshot.
func DecodeSnapshot(data []byte, account, session uuid.UUID, version int64) (*domain.Session, error) {
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if snap.Format != snapshotFormat || snap.AccountID != account || snap.SessionID != session || snap.Version != version {
		return nil, fmt.Errorf("%w: format %d of session %s of account %s at version %d, want format %d of session %s of account %s at version %d",
			ErrSnapshot, snap.Format, snap.SessionID, snap.AccountID, snap.Version, snapshotFormat, session, account, version)
	}
	s := domain.NewSession(account, session)
	s.Version, s.Holder = snap.Version, snap.Holder
	s.Handoffs = make([]domain.Handoff, len(snap.Handoffs))
	for i, h := range snap.Handoffs {
		s.Handoffs[i] = domain.Handoff{
			ID: h.ID, SessionID: h.SessionID, AccountID: h.AccountID, TeamID: h.TeamID,
			Intent: domain.Intent(h.Intent), Notes: h.Notes, NotesErased: h.NotesErased, Priority: domain.Priority(h.Priority), Status: domain.Status(h.Status),
			CreatedBy: h.CreatedBy, CreatedAt: h.CreatedAt.UTC(),
			ClaimedBy: h.ClaimedBy, ClaimedAt: h.ClaimedAt.UTC(), WithdrawnAt: h.WithdrawnAt.UTC(),
		}
	}
	return s, nil
}
