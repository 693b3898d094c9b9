package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Erasure is the outcome of Erase.
type Erasure struct {
	// Appended reports that this call destroyed a data key and appended
	// SessionDataErased; false when the session's data was erased already
	// and nothing has been written to it since (erasing is idempotent).
	Appended bool
	// Position is that of the SessionDataErased event, from a handler
	// that waits for the read models; 0 otherwise.
	Position int64
}

// Erase erases the personal data of a session of the actor's account on
// request: in one append, it destroys the session's data key and appends
// SessionDataErased (who, when, why; no personal data). The events stay,
// their sealed notes and client addresses unreadable for ever; every
// reader of the log shows the notes as erased. The session's snapshot,
// which holds its open handoff's notes, is replaced by one without.
// Erasing a session whose data is already erased, with nothing written
// since, appends nothing. It returns a *domain.Error: EFORBIDDEN for a
// role other than owner or admin, ENOTFOUND for a session the account
// does not have, EINVALID for a bad reason.
func (h *Handler) Erase(ctx context.Context, actor domain.Actor, session uuid.UUID, reason string, trace Trace) (Erasure, error) {
	res, err := h.erase(ctx, actor, session, reason, trace)
	cmd := domain.EraseSessionData{Actor: actor}
	h.metrics.Command(commandType(cmd), outcome(cmd, err))
	return res, err
}

func (h *Handler) erase(ctx context.Context, actor domain.Actor, session uuid.UUID, reason string, trace Trace) (Erasure, error) {
	stream := eventcodec.StreamName(actor.AccountID, session)
	cmd := domain.EraseSessionData{Actor: actor, Reason: reason, At: h.Now()}
	for attempt := 1; ; attempt++ {
		state, _, tip, err := h.current(ctx, actor.AccountID, session)
		if err != nil {
			return Erasure{}, err
		}
		decided, err := domain.Decide(state, cmd)
		if err != nil {
			return Erasure{}, err
		}
		if tip.key == nil && state.Erased() {
			// Nothing readable is left; the snapshot may still be one
			// taken before the erasure, if saving it failed then.
			return Erasure{}, h.saveErasedSnapshot(ctx, stream, state)
		}
		// The erasure's own metadata holds no client address: it has no
		// key to seal one under, and needs none.
		trace.ClientIP = ""
		events, err := h.encode(actor, decided, trace)
		if err != nil {
			return Erasure{}, err
		}
		last := events[len(events)-1].ID
		position, err := h.append(ctx, stream, eventstore.Exact(state.Version), eventstore.KeyChange{Destroy: true}, events)
		if errors.Is(err, eventstore.ErrConflict) {
			h.metrics.Conflict()
			if attempt < maxAttempts {
				h.metrics.Retry()
				continue
			}
			return Erasure{}, ErrBusy
		}
		if err != nil {
			return Erasure{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		h.metrics.Appended()
		for _, e := range decided {
			state.Apply(e)
		}
		if err := h.saveSnapshotOf(ctx, stream, state, last); err != nil {
			return Erasure{}, err
		}
		h.waitForReadModels(ctx, position)
		return Erasure{Appended: true, Position: position}, nil
	}
}

// saveErasedSnapshot replaces the session's snapshot, if it has one, by
// one of its erased state, made after the same event.
func (h *Handler) saveErasedSnapshot(ctx context.Context, stream string, state *domain.Session) error {
	snap, found, err := h.log.Snapshot(ctx, stream)
	if err != nil || !found {
		return err
	}
	if snap.Version == state.Version {
		return h.saveSnapshotOf(ctx, stream, state, snap.EventID)
	}
	// A snapshot of an older version: fold the erasure into it.
	old, err := eventcodec.DecodeSnapshot(snap.Data, state.AccountID, state.ID, snap.Version)
	if err != nil {
		return nil // unusable: never read, and replaced by the next one saved
	}
	old.Apply(domain.SessionDataErased{})
	old.Version = snap.Version
	return h.saveSnapshotOf(ctx, stream, old, snap.EventID)
}

// saveSnapshotOf stores state as the stream's snapshot, made after the
// event with id lastID.
func (h *Handler) saveSnapshotOf(ctx context.Context, stream string, state *domain.Session, lastID string) error {
	data, err := eventcodec.EncodeSnapshot(state)
	if err == nil {
		err = h.log.SaveSnapshot(ctx, eventstore.Snapshot{Stream: stream, Version: state.Version, EventID: lastID, Data: data})
	}
	if err != nil {
		return fmt.Errorf("replace the snapshot of %s: %w", stream, err)
	}
	return nil
}
