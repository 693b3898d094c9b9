// Package projections builds the ledger's read models, the team queue and
// the handoff history, from the global event log. A projector tails the log
// from its checkpoint and stores each batch of changes together with the new
// checkpoint in one transaction, so every event is applied exactly once.
// An event that cannot be applied is skipped and recorded, in the
// transaction that moves the checkpoint past it, so that it never stops
// the read models of everyone (see docs/read-models.md).
package projections

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/leader"
)

// HandoffsProjector is the name of the projector (and of its checkpoint)
// that maintains the handoff read model.
const HandoffsProjector = "handoffs"

// ErrStaleCheckpoint is matched (errors.Is) by the error of Store.Update
// when the checkpoint was not where the caller expected: another projector
// moved it.
var ErrStaleCheckpoint = errors.New("checkpoint moved by another projector")

// Queries reads the handoff read model.
type Queries interface {
	// Queue returns a page of the open handoffs of a team of an account:
	// escalations first, then higher priority, then oldest first, then by
	// id (QueueCursor).
	Queue(ctx context.Context, account, team uuid.UUID, page Page) ([]domain.Handoff, error)
	// AccountQueue returns a page of the open handoffs of every team of an
	// account, in the queue's order (QueueCursor): the auditor's view.
	AccountQueue(ctx context.Context, account uuid.UUID, page Page) ([]domain.Handoff, error)
	// History returns a page of the handoffs of a session of an account,
	// newest first, then by id descending (HistoryCursor); none for an
	// unknown session or one of another account.
	History(ctx context.Context, account, session uuid.UUID, page Page) ([]domain.Handoff, error)
}

// Store keeps the read models and the projectors' checkpoints.
type Store interface {
	Queries
	// Checkpoint returns the position up to which the named projector has
	// applied the log; 0 before its first batch.
	Checkpoint(ctx context.Context, name string) (int64, error)
	// Update runs fn in one transaction and, in the same transaction, moves
	// the named projector's checkpoint from `from` to `to` (to >= from). It
	// fails without changing anything, with an error matching
	// ErrStaleCheckpoint, when the checkpoint is not at `from`, which makes a
	// second projector that wrongly runs at the same time harmless, and
	// with an error matching leader.ErrDeposed when fence is checked and
	// no longer valid as the transaction ends (see pgleader.CheckFence), so
	// that a leader that lost its lease cannot move the checkpoint after
	// its successor took over. A store that cannot check fences (SQLite,
	// whose one process leads alone) refuses a checked one. When fn fails,
	// nothing changes and Update returns fn's error.
	Update(ctx context.Context, fence leader.Fence, name string, from, to int64, fn func(Tx) error) error
	// Move moves the named checkpoint as Update does, changing nothing
	// else: for a checkpoint that stands for work done elsewhere, such as
	// the relay's.
	Move(ctx context.Context, fence leader.Fence, name string, from, to int64) error
	// Skips summarises the events the named projector skipped, as
	// recorded by Tx.Skip.
	Skips(ctx context.Context, name string) (Skips, error)
	// SealNotes returns the notes of a handoff of a session stream as the
	// store keeps them (Tx.PutHandoff takes them so): sealed under the
	// stream's data key, stored as key, as read with the event the notes
	// come from (nil for none; see shred.Keyring.SealNotes). The Queries
	// return them opened with the key read in the same query, or erased
	// once the key is gone.
	SealNotes(stream string, key *eventstore.DataKey, notes string) (string, error)
}

// Skipped is an event a projector could not apply and passed over.
type Skipped struct {
	Projector string
	Position  int64
	EventID   string
	Type      string
	// Error says why the event could not be applied.
	Error string
	At    time.Time
}

// Skips summarises the skipped events of a projector.
type Skips struct {
	Count int
	// First and Last are the skipped events of the lowest and the highest
	// position; zero when Count is 0.
	First, Last Skipped
}

// Tx changes the read models inside Store.Update.
type Tx interface {
	// Handoff returns the stored handoff with the given id, if any, with
	// its notes as stored (Store.SealNotes).
	Handoff(ctx context.Context, id uuid.UUID) (domain.Handoff, bool, error)
	// PutHandoff inserts or replaces a handoff, its notes as stored
	// (Store.SealNotes); position is that of the last event applied to it.
	PutHandoff(ctx context.Context, h domain.Handoff, position int64) error
	// EraseNotes erases the notes of every handoff of a session of an
	// account (SessionDataErased at position): empty, and NotesErased.
	EraseNotes(ctx context.Context, account, session uuid.UUID, position int64) error
	// Attempt runs fn, which changes the read models through this Tx, so
	// that it succeeds or fails on its own: fn's changes are written (and
	// may be refused by the store) before Attempt returns. When fn fails,
	// its changes are undone, the transaction carries on, and Attempt
	// returns fn's error as failed. err is the failure of the transaction
	// itself, which then cannot go on.
	Attempt(ctx context.Context, fn func() error) (failed, err error)
	// Skip records an event the projector passes over.
	Skip(ctx context.Context, s Skipped) error
	// Reset deletes every read-model row and every skipped event's record,
	// for a rebuild from position 0.
	Reset(ctx context.Context) error
	// AddHandoffs writes, in bulk, handoffs that are not stored (after
	// Reset, for a rebuild), each with the position of the last event
	// applied to it; no two of them may have the same id. A row the store
	// refuses fails the whole call.
	AddHandoffs(ctx context.Context, rows []HandoffRow) error
}

// HandoffRow is a handoff as the read model stores it: with the position
// of the last event applied to it.
type HandoffRow struct {
	Handoff  domain.Handoff
	Position int64
}
