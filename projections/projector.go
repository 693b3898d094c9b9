package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/poll"
	"github.com/resolutionflow/ledgerd/leader"
)

// Log is the global event log a projector tails.
type Log interface {
	// ReadAll returns up to limit events with a position greater than
	// after, in position order, never skipping one that commits late.
	ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error)
}

// Timings and sizes of the projector.
const (
	// batchSize is how many events one read-model transaction applies.
	batchSize = 500
	// pollInterval is how often a leading projector looks for events that
	// no wake-up signalled, such as those appended by other processes.
	pollInterval = 100 * time.Millisecond
	// retryDelay is how long a failed projector waits before trying again.
	retryDelay = time.Second
	// WaitFor polls the checkpoint, when the projector runs elsewhere,
	// every waitPollMin at first, backing off to waitPollMax.
	waitPollMin = 2 * time.Millisecond
	waitPollMax = 20 * time.Millisecond
)

// Projector maintains the handoff read model from the log. Run it in every
// process: the leadership lease makes only one apply events at a time.
type Projector struct {
	log     Log
	store   Store
	locker  leader.Locker
	wake    func() <-chan struct{}
	logger  *slog.Logger
	applier applier

	// applied is the highest checkpoint this process knows to be
	// committed.
	applied atomic.Int64
	// leading is true while this process's Run holds the lease and tails
	// the log, so that WaitFor need not poll.
	leading atomic.Bool
	// changed is notified whenever applied or leading changes.
	changed poll.Signal
}

// NewProjector returns a projector of log into store. wake, when not nil,
// returns a channel closed at the next append made in this process; appends
// made elsewhere are found by polling. logger may be nil for slog.Default().
func NewProjector(log Log, store Store, locker leader.Locker, wake func() <-chan struct{}, logger *slog.Logger) *Projector {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("projector", HandoffsProjector)
	return &Projector{log: log, store: store, locker: locker, wake: wake, logger: logger, applier: applier{logger: logger, seal: store.SealNotes}}
}

// Run applies the log to the read model until ctx ends, then returns nil.
// It waits for the projector's leadership lease, tails the log from the
// stored checkpoint while it holds the lease, each checkpoint move fenced
// by it, and waits for the lease again when it loses it. Failures are
// logged and retried.
func (p *Projector) Run(ctx context.Context) error {
	for {
		lease, err := p.locker.Acquire(ctx, HandoffsProjector)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("projector %s: %w", HandoffsProjector, err)
		}
		err = p.lead(lease.Context(), lease.Fence())
		p.setLeading(false)
		lease.Release()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, leader.ErrDeposed):
			p.logger.WarnContext(ctx, "projector deposed: its lease expired or passed to another process", "err", err)
		case err != nil:
			p.logger.ErrorContext(ctx, "projector failed, retrying", "err", err, "retry_in", retryDelay)
			if !poll.Sleep(ctx, retryDelay, nil) {
				return nil
			}
		default:
			p.logger.WarnContext(ctx, "projector lost leadership")
		}
	}
}

// lead tails the log while ctx, the lease's context, lasts, moving the
// checkpoint under fence; it returns nil when ctx ends.
func (p *Projector) lead(ctx context.Context, fence leader.Fence) error {
	pos, err := p.store.Checkpoint(ctx, HandoffsProjector)
	if err != nil {
		return stopped(ctx, fmt.Errorf("read checkpoint: %w", err))
	}
	p.advance(pos)
	p.setLeading(true)
	p.logger.InfoContext(ctx, "projector leading", "checkpoint", pos)
	for {
		wake := p.wakeup()
		next, n, err := p.step(ctx, fence, pos)
		switch {
		case errors.Is(err, ErrStaleCheckpoint):
			p.logger.WarnContext(ctx, "checkpoint moved by another projector, reloading", "expected", pos)
			if pos, err = p.store.Checkpoint(ctx, HandoffsProjector); err != nil {
				return stopped(ctx, fmt.Errorf("read checkpoint: %w", err))
			}
			p.advance(pos)
			continue
		case err != nil:
			return stopped(ctx, err)
		}
		pos = next
		if n < batchSize && !poll.Sleep(ctx, pollInterval, wake) {
			return nil
		}
	}
}

// step applies the next batch of events after position from, and returns
// the new checkpoint and the number of events applied. When the batch
// fails, it applies the batch again one event at a time, skipping those
// that fail on their own (applyEach).
func (p *Projector) step(ctx context.Context, fence leader.Fence, from int64) (int64, int, error) {
	events, err := p.log.ReadAll(ctx, from, batchSize)
	if err != nil {
		return from, 0, fmt.Errorf("read log after %d: %w", from, err)
	}
	if len(events) == 0 {
		return from, 0, nil
	}
	to := events[len(events)-1].Position
	err = p.store.Update(ctx, fence, HandoffsProjector, from, to, func(tx Tx) error {
		return p.applier.applyAll(ctx, tx, events)
	})
	if err != nil && !errors.Is(err, ErrStaleCheckpoint) && !errors.Is(err, leader.ErrDeposed) && ctx.Err() == nil {
		p.logger.WarnContext(ctx, "batch failed, applying its events one at a time", "from", from+1, "to", to, "err", err)
		err = p.applyEach(ctx, fence, from, to, events)
	}
	if err != nil {
		return from, 0, fmt.Errorf("apply events %d to %d: %w", from+1, to, err)
	}
	p.advance(to)
	p.logger.DebugContext(ctx, "projector applied batch", "from", from, "to", to, "events", len(events))
	return to, len(events), nil
}

// applyEach applies events, the log from position from to position to, in
// one Store.Update, each event on its own: an event that fails alone while
// the transaction goes on is skipped, recorded in the transaction that
// moves the checkpoint past it, and logged once that has committed. When
// the store itself fails (the move of the checkpoint, the transaction),
// nothing is skipped: the error is returned and the batch is retried.
func (p *Projector) applyEach(ctx context.Context, fence leader.Fence, from, to int64, events []eventstore.Event) error {
	var skipped []Skipped
	err := p.store.Update(ctx, fence, HandoffsProjector, from, to, func(tx Tx) error {
		var err error
		skipped, err = p.applier.applyEach(ctx, tx, events)
		return err
	})
	if err != nil {
		return err
	}
	p.applier.logSkipped(ctx, skipped)
	return nil
}

// WaitFor returns once the read model reflects the log up to position, or
// an error when ctx ends first. It is woken by each batch this process's
// projector applies; when that projector does not lead, it also polls the
// stored checkpoint, less often the longer it waits.
func (p *Projector) WaitFor(ctx context.Context, position int64) error {
	delay := waitPollMin
	for {
		changed := p.changed.Wait()
		if p.applied.Load() >= position {
			return nil
		}
		wait := delay
		if !p.leading.Load() {
			cp, err := p.store.Checkpoint(ctx, HandoffsProjector)
			if err != nil {
				return fmt.Errorf("wait for read models to reach position %d: %w", position, err)
			}
			if cp >= position {
				p.advance(cp)
				return nil
			}
			delay = min(2*delay, waitPollMax)
		}
		if !poll.Sleep(ctx, wait, changed) {
			return fmt.Errorf("wait for read models to reach position %d: %w", position, ctx.Err())
		}
	}
}

// advance records that the checkpoint reached pos.
func (p *Projector) advance(pos int64) {
	for {
		cur := p.applied.Load()
		if pos <= cur {
			return
		}
		if p.applied.CompareAndSwap(cur, pos) {
			p.changed.Notify()
			return
		}
	}
}

func (p *Projector) setLeading(leading bool) {
	p.leading.Store(leading)
	p.changed.Notify()
}

// wakeup returns the channel of the next in-process append, or nil (which
// never fires) without a wake function.
func (p *Projector) wakeup() <-chan struct{} {
	if p.wake == nil {
		return nil
	}
	return p.wake()
}

// replay is the rebuild event by event, for a log with an event whose
// row the store refuses: it replays the whole log inside the Update's
// transaction, each batch in one Tx.Attempt and a batch that fails again
// one event at a time (applyEach), as the projector applies it, so that
// the events skipped are exactly the projector's.
func replay(ctx context.Context, log Log, store Store, logger *slog.Logger) error {
	var err error
	for range maxRebuildAttempts {
		if err = replayOnce(ctx, log, store, logger); !errors.Is(err, ErrStaleCheckpoint) {
			return err
		}
	}
	return fmt.Errorf("rebuild: the checkpoint kept moving: %w", err)
}

// replayOnce replays from the checkpoint it reads, failing with
// ErrStaleCheckpoint when the checkpoint moves before it takes it.
func replayOnce(ctx context.Context, log Log, store Store, logger *slog.Logger) error {
	applied, err := store.Checkpoint(ctx, HandoffsProjector)
	if err != nil {
		return fmt.Errorf("rebuild: read checkpoint: %w", err)
	}
	to, err := lastPosition(ctx, log, applied)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	a := applier{logger: logger, seal: store.SealNotes}
	var skipped []Skipped
	err = store.Update(ctx, leader.Fence{}, HandoffsProjector, applied, to, func(tx Tx) error {
		if err := tx.Reset(ctx); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		var err error
		skipped, err = a.replay(ctx, tx, log, to)
		return err
	})
	if err != nil {
		return fmt.Errorf("rebuild to position %d: %w", to, err)
	}
	a.logSkipped(ctx, skipped)
	return nil
}

// lastPosition returns the position of the last event of the log, reading
// on from position from.
func lastPosition(ctx context.Context, log Log, from int64) (int64, error) {
	for {
		events, err := log.ReadAll(ctx, from, batchSize)
		if err != nil {
			return 0, fmt.Errorf("read log after %d: %w", from, err)
		}
		if len(events) == 0 {
			return from, nil
		}
		from = events[len(events)-1].Position
	}
}

// applier applies events to the read model.
type applier struct {
	logger *slog.Logger
	// seal is Store.SealNotes: the notes of a new handoff are stored
	// sealed under its session's key.
	seal func(stream string, key *eventstore.DataKey, notes string) (string, error)
}

// replay applies every event of the log up to position to, and returns
// the events it skipped. Each batch is one Tx.Attempt; a batch that fails
// is applied again one event at a time (applyEach), as the projector does.
func (a applier) replay(ctx context.Context, tx Tx, log Log, to int64) ([]Skipped, error) {
	var skipped []Skipped
	for after := int64(0); after < to; {
		events, err := log.ReadAll(ctx, after, batchSize)
		if err != nil {
			return nil, fmt.Errorf("read log after %d: %w", after, err)
		}
		if len(events) == 0 {
			return nil, fmt.Errorf("log ends at position %d, before %d", after, to)
		}
		from := after
		after = events[len(events)-1].Position
		if i := slices.IndexFunc(events, func(e eventstore.Event) bool { return e.Position > to }); i >= 0 {
			events = events[:i]
		}
		failed, err := tx.Attempt(ctx, func() error { return a.applyAll(ctx, tx, events) })
		if err != nil {
			return nil, err
		}
		if failed != nil {
			a.logger.WarnContext(ctx, "batch failed, applying its events one at a time", "from", from+1, "to", min(after, to), "err", failed)
			more, err := a.applyEach(ctx, tx, events)
			if err != nil {
				return nil, err
			}
			skipped = append(skipped, more...)
		}
	}
	return skipped, nil
}

func (a applier) applyAll(ctx context.Context, tx Tx, events []eventstore.Event) error {
	for _, e := range events {
		if err := a.apply(ctx, tx, e); err != nil {
			return fmt.Errorf("event %d (%s): %w", e.Position, e.Type, err)
		}
	}
	return nil
}

// applyEach applies events one at a time, each in its own Tx.Attempt. An
// event whose attempt fails is skipped: recorded with Tx.Skip and
// returned. It fails only when the transaction does, or when ctx ends: an
// event is never skipped for that.
func (a applier) applyEach(ctx context.Context, tx Tx, events []eventstore.Event) ([]Skipped, error) {
	var skipped []Skipped
	for _, e := range events {
		failed, err := tx.Attempt(ctx, func() error { return a.apply(ctx, tx, e) })
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("event %d (%s): %w", e.Position, e.Type, err)
		}
		if failed == nil {
			continue
		}
		s := Skipped{Projector: HandoffsProjector, Position: e.Position, EventID: e.ID, Type: e.Type, Error: reason(failed), At: time.Now().UTC()}
		if err := tx.Skip(ctx, s); err != nil {
			return nil, fmt.Errorf("record event %d as skipped: %w", e.Position, err)
		}
		skipped = append(skipped, s)
	}
	return skipped, nil
}

// logSkipped logs, once their transaction has committed, the events a
// projector or a rebuild skipped.
func (a applier) logSkipped(ctx context.Context, skipped []Skipped) {
	for _, s := range skipped {
		a.logger.ErrorContext(ctx, "skipped an event the read models cannot apply",
			"position", s.Position, "event_id", s.EventID, "type", s.Type, "err", s.Error, "skipped_at", s.At)
	}
}

// maxReason bounds the error text recorded for a skipped event.
const maxReason = 2000

// reason is err's text as recorded: valid UTF-8 without NUL bytes, which
// every store accepts, of at most maxReason bytes.
func reason(err error) string {
	s := strings.ToValidUTF8(strings.ReplaceAll(err.Error(), "\x00", ""), "\uFFFD")
	if len(s) > maxReason {
		s = strings.ToValidUTF8(s[:maxReason], "")
	}
	return s
}

// apply folds one event into the handoff row it concerns, with the
// domain's own Session.Apply, so the read model cannot drift from the rules.
func (a applier) apply(ctx context.Context, tx Tx, e eventstore.Event) error {
	decoded, err := eventcodec.Decode(e.Type, e.Data)
	if errors.Is(err, eventcodec.ErrUnknownType) {
		a.logger.WarnContext(ctx, "skipping event of unknown type", "type", e.Type, "position", e.Position, "id", e.ID)
		return nil
	}
	if err != nil {
		return err
	}
	if erased, ok := decoded.(domain.SessionDataErased); ok {
		return tx.EraseNotes(ctx, erased.AccountID, erased.SessionID, e.Position)
	}
	var session domain.Session
	id, changes := changedHandoff(decoded)
	if changes {
		row, found, err := tx.Handoff(ctx, id)
		if err != nil {
			return fmt.Errorf("load handoff %s: %w", id, err)
		}
		if !found {
			return fmt.Errorf("handoff %s is not in the read model", id)
		}
		session.Handoffs = []domain.Handoff{row}
	}
	session.Apply(decoded)
	if len(session.Handoffs) != 1 {
		return fmt.Errorf("event made %d handoff rows, want 1", len(session.Handoffs))
	}
	h := session.Handoffs[0]
	if !changes && h.Notes != "" {
		// A new handoff, its notes in plaintext from the opened event
		// (a changed one keeps its notes as stored).
		if h.Notes, err = a.seal(e.Stream, e.DataKey, h.Notes); err != nil {
			return err
		}
	}
	return tx.PutHandoff(ctx, h, e.Position)
}

// changedHandoff returns the id of the existing handoff an event changes;
// false for an event that creates one.
func changedHandoff(e domain.Event) (uuid.UUID, bool) {
	switch e.(type) {
	case domain.HandoffClaimed, domain.HandoffWithdrawn:
		return e.Handoff(), true
	}
	return uuid.Nil, false
}

// stopped returns nil for an error caused by ctx ending, err otherwise.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
