package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/leader"
)

// RebuildPage is how many events the rebuild reads from the log at once.
const RebuildPage = 5000

// RebuildProgress is how far a rebuild has got, for a progress line.
type RebuildProgress struct {
	// Events counts the events read so far; Position is the last one's.
	Events   int
	Position int64
	// Head is the log's last position when the rebuild started, 0 when the
	// log cannot tell it.
	Head int64
	// Started is when the rebuild started.
	Started time.Time
	// Writing is true once the whole log is read and the read models are
	// being written.
	Writing bool
}

// Rebuild replays the whole log into fresh read models and sets the
// checkpoint to the end of the log, in one Store.Update transaction:
// readers see the old tables until it commits, never empty ones. It can run
// while a projector runs.
//
// It reads the log in pages of RebuildPage events and folds them in memory
// with the projector's own apply (so an event that cannot be applied is
// skipped and recorded just as the projector does), then, in the one
// transaction, resets the read models, writes every handoff in bulk
// (Tx.AddHandoffs) with the skipped events' records, and moves the
// checkpoint. Its memory grows with the number of handoffs. When the store
// refuses a row in bulk, the rebuild replays the log again event by event
// inside the transaction, as the projector applies it, so that exactly the
// events whose rows are refused are skipped.
//
// The rebuild moves the checkpoint from where it found it, as a projector
// does, so the checkpoint never goes back and no applied event is wiped
// without being replayed: when a projector commits a batch after the
// rebuild read the checkpoint, the rebuild's move fails, and it reads on
// from where its fold stopped to past the projector's checkpoint and tries
// again; once it holds the checkpoint, the projector's next batch waits,
// finds the checkpoint moved, and carries on from the rebuild's end. A
// rebuild is no leader: its move is not fenced, the compare-and-set alone
// orders it with the projector's.
func Rebuild(ctx context.Context, log Log, store Store) error {
	return RebuildWithProgress(ctx, log, store, nil)
}

// RebuildWithProgress is Rebuild calling progress, when not nil, after each
// page of the log it reads and once it starts writing.
func RebuildWithProgress(ctx context.Context, log Log, store Store, progress func(RebuildProgress)) error {
	logger := slog.Default().With("projector", HandoffsProjector)
	f := newFold(applier{logger: logger, seal: store.SealNotes})
	report := func(RebuildProgress) {}
	if progress != nil {
		report = progress
	}
	p := RebuildProgress{Started: time.Now()}
	if h, ok := log.(Head); ok {
		if head, err := h.Head(ctx); err == nil {
			p.Head = head
		}
	}
	var err error
	for range maxRebuildAttempts {
		var applied int64
		if applied, err = store.Checkpoint(ctx, HandoffsProjector); err != nil {
			return fmt.Errorf("rebuild: read checkpoint: %w", err)
		}
		if err = f.readOn(ctx, log, applied, func(events int, position int64) {
			p.Events, p.Position = events, position
			report(p)
		}); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		p.Writing = true
		report(p)
		err = store.Update(ctx, leader.Fence{}, HandoffsProjector, applied, f.to, func(tx Tx) error { return f.write(ctx, tx) })
		if errors.Is(err, ErrStaleCheckpoint) {
			continue // a projector moved it: read on past it, try again
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, leader.ErrDeposed) && f.wrote {
			logger.WarnContext(ctx, "rebuild: the store refused a row written in bulk; replaying event by event", "err", err)
			return replay(ctx, log, store, logger)
		}
		if err != nil {
			return fmt.Errorf("rebuild to position %d: %w", f.to, err)
		}
		f.a.logSkipped(ctx, f.skipped)
		return nil
	}
	return fmt.Errorf("rebuild: the checkpoint kept moving: %w", err)
}

// maxRebuildAttempts bounds how often Rebuild tries again because a
// projector moved the checkpoint first; each attempt reads on from where
// the last one stopped.
const maxRebuildAttempts = 100

// fold is the read model folded in memory from the log up to position to.
type fold struct {
	a     applier
	to    int64
	rows  []HandoffRow
	index map[uuid.UUID]int // handoff id -> its row in rows
	// sessions holds the rows of each session of each account, for
	// erasures.
	sessions map[[2]uuid.UUID][]int
	skipped  []Skipped
	events   int
	// wrote is true once a write has reached AddHandoffs.
	wrote bool
}

func newFold(a applier) *fold {
	return &fold{a: a, index: map[uuid.UUID]int{}, sessions: map[[2]uuid.UUID][]int{}}
}

// readOn folds the log from where the fold stopped until a read finds no
// more events, and at least past position least (the checkpoint, which
// only committed events can have passed). progress is called after each
// page.
func (f *fold) readOn(ctx context.Context, log Log, least int64, progress func(events int, position int64)) error {
	tx := memTx{f}
	for {
		events, err := log.ReadAll(ctx, f.to, RebuildPage)
		if err != nil {
			return fmt.Errorf("read log after %d: %w", f.to, err)
		}
		if len(events) == 0 {
			if f.to >= least {
				return nil
			}
			// An append below the checkpoint is still settling: wait a
			// little and read again.
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return fmt.Errorf("read log after %d up to the checkpoint %d: %w", f.to, least, err)
			}
			continue
		}
		for _, e := range events {
			if err := f.a.apply(ctx, tx, e); err != nil {
				f.skipped = append(f.skipped, Skipped{Projector: HandoffsProjector, Position: e.Position, EventID: e.ID,
					Type: e.Type, Error: reason(err), At: time.Now().UTC()})
			}
		}
		f.to = events[len(events)-1].Position
		f.events += len(events)
		progress(f.events, f.to)
	}
}

// write is the rebuild's Store.Update function: it replaces the read
// models with the fold.
func (f *fold) write(ctx context.Context, tx Tx) error {
	if err := tx.Reset(ctx); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	f.wrote = true
	if err := tx.AddHandoffs(ctx, f.rows); err != nil {
		return err
	}
	for _, s := range f.skipped {
		if err := tx.Skip(ctx, s); err != nil {
			return fmt.Errorf("record event %d as skipped: %w", s.Position, err)
		}
	}
	return nil
}

// memTx is the Tx the fold applies events through: handoffs in memory.
// Only Handoff and PutHandoff are used.
type memTx struct{ f *fold }

func (t memTx) Handoff(_ context.Context, id uuid.UUID) (domain.Handoff, bool, error) {
	if i, ok := t.f.index[id]; ok {
		return t.f.rows[i].Handoff, true, nil
	}
	return domain.Handoff{}, false, nil
}

func (t memTx) PutHandoff(_ context.Context, h domain.Handoff, position int64) error {
	if i, ok := t.f.index[h.ID]; ok {
		t.f.rows[i] = HandoffRow{h, position}
		return nil
	}
	t.f.index[h.ID] = len(t.f.rows)
	key := [2]uuid.UUID{h.AccountID, h.SessionID}
	t.f.sessions[key] = append(t.f.sessions[key], len(t.f.rows))
	t.f.rows = append(t.f.rows, HandoffRow{h, position})
	return nil
}

// EraseNotes erases the notes of the session's handoffs, as the stores'
// EraseNotes does.
func (t memTx) EraseNotes(_ context.Context, account, session uuid.UUID, position int64) error {
	for _, i := range t.f.sessions[[2]uuid.UUID{account, session}] {
		r := &t.f.rows[i]
		r.Handoff.Notes, r.Handoff.NotesErased, r.Position = "", true, position
	}
	return nil
}

func (memTx) Attempt(context.Context, func() error) (error, error) {
	return nil, errors.New("rebuild fold: Attempt is not supported")
}

func (memTx) Skip(context.Context, Skipped) error {
	return errors.New("rebuild fold: Skip is not supported")
}

func (memTx) Reset(context.Context) error {
	return errors.New("rebuild fold: Reset is not supported")
}

func (memTx) AddHandoffs(context.Context, []HandoffRow) error {
	return errors.New("rebuild fold: AddHandoffs is not supported")
}

// sleepCtx waits for d, or returns ctx's error when it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
