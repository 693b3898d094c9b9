// Package commands runs the ledger's commands: it loads a session's stream,
// folds it into state, lets the domain decide, and appends the resulting
// events expecting the version it loaded. When another append to the same
// session wins the race, it reloads and decides again, so the loser gets the
// domain's real answer (for a claim: "Handoff already claimed").
package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/shred"
)

// EventLog is what the handler needs from an event store.
type EventLog interface {
	AppendKeyed(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, readBack bool, opts ...eventstore.AppendOption) ([]eventstore.Event, error)
	ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error)
	Snapshot(ctx context.Context, stream string) (eventstore.Snapshot, bool, error)
	SaveSnapshot(ctx context.Context, s eventstore.Snapshot) error
}

// SnapshotEvery is how far a session's stream may grow past its snapshot:
// a command that leaves the stream SnapshotEvery events or more past the
// snapshot it loaded saves a new one. A command therefore reads a snapshot
// and at most about SnapshotEvery events, however long the stream is: its
// cost does not grow with the session's history, but for the snapshot,
// which holds closed handoffs without their notes (see
// eventcodec.EncodeSnapshot).
const SnapshotEvery = 32

// Waiter blocks until the read models reflect the log up to a position.
// A handler given one answers only once its change is visible. ledgerd
// serve gives none and makes reads wait instead (projections.CaughtUp), so
// commands answer as soon as their events are committed.
type Waiter interface {
	WaitFor(ctx context.Context, position int64) error
}

// waitTimeout bounds how long an appended command waits for the read
// models. The wait is not cut short when the client goes away: the command
// has happened, and an Idempotency-Key retry must get its answer.
const waitTimeout = 10 * time.Second

// maxAttempts bounds the reload-and-decide loop. Each failed attempt means
// another append to the same session committed, so the bound is only hit
// under sustained contention on one session.
const maxAttempts = 16

// ErrBusy answers a command whose session changed under it on each of
// maxAttempts tries. Nothing was appended, and the command may be retried.
var ErrBusy = domain.Errorf(domain.ECONFLICT, "Session is busy, please retry")

// Trace identifies the request behind a command; it goes into the events'
// metadata.
type Trace struct {
	// RequestID is the request's id; the events' request, causation and
	// correlation id.
	RequestID string
	// ClientRequestID and ClientCorrelationID are the ids the client gave
	// the request, recorded as its claim.
	ClientRequestID     string
	ClientCorrelationID string
	// ClientIP is the address the request came from: the peer's, or the
	// client's as a trusted proxy forwarded it.
	ClientIP string
}

// Handler executes commands.
type Handler struct {
	log     EventLog
	waiter  Waiter
	metrics *metrics.Metrics
	keys    *shred.Keyring
	clock   func() time.Time
}

// Option configures a Handler.
type Option func(*Handler)

// WithMetrics makes the handler count its commands, appends, conflicts
// and retries in m.
func WithMetrics(m *metrics.Metrics) Option {
	return func(h *Handler) { h.metrics = m }
}

// WithKeyring makes the handler seal the personal data of the events it
// appends (shred.Seal) under each session's data key, creating the key with
// the session's first event, or its first after an erasure, in the same
// append. The log must then be read opened (shred.Store). Without one,
// events are appended as the domain decided them.
func WithKeyring(k *shred.Keyring) Option {
	return func(h *Handler) { h.keys = k }
}

// WithClock makes the handler read the time of its commands (Now) from
// clock instead of SystemClock.
func WithClock(clock func() time.Time) Option {
	return func(h *Handler) { h.clock = clock }
}

// NewHandler returns a handler appending to log and waiting on waiter (nil
// for no waiting) before it reports success.
func NewHandler(log EventLog, waiter Waiter, opts ...Option) *Handler {
	h := &Handler{log: log, waiter: waiter, clock: SystemClock}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Result is a command's outcome: the handoff it touched, as it now stands,
// and, from a handler that waits for the read models, the position of the
// last event appended. A handler that does not wait has no use for the
// position and appends without reading it back (EventLog.AppendNoReadBack);
// Position is then 0.
type Result struct {
	Handoff  domain.Handoff
	Position int64
}

// Answerer returns the answer a request stores under its Idempotency-Key
// for a command's result (see WithAnswer).
type Answerer func(Result) (eventstore.Answer, error)

// ExecuteOption adds to one command.
type ExecuteOption func(*execution)

type execution struct {
	answer Answerer
}

// WithAnswer makes the command write answer(result) in the same
// transaction as its events (eventstore.WithAnswer), so that the request's
// stored answer and the events it reports are committed together. The
// result it is given is the one Execute returns but for Position. When the
// answer's key is taken, nothing is appended and Execute returns an error
// matching eventstore.ErrAnswerTaken.
func WithAnswer(answer Answerer) ExecuteOption {
	return func(e *execution) { e.answer = answer }
}

// Execute runs cmd on the session of the actor's account. It returns a
// *domain.Error or *domain.ClaimedError for a rejected command.
func (h *Handler) Execute(ctx context.Context, actor domain.Actor, session uuid.UUID, cmd domain.Command, trace Trace, opts ...ExecuteOption) (Result, error) {
	var x execution
	for _, o := range opts {
		o(&x)
	}
	res, err := h.execute(ctx, actor, session, cmd, trace, x)
	h.metrics.Command(commandType(cmd), outcome(cmd, err))
	return res, err
}

// commandType names cmd for the metrics.
func commandType(cmd domain.Command) string {
	switch c := cmd.(type) {
	case domain.CreateHandoff:
		return string(c.Intent)
	case domain.ClaimHandoff:
		return "claim"
	case domain.WithdrawHandoff:
		return "withdraw"
	case domain.EraseSessionData:
		return "erase"
	}
	return "unknown"
}

// outcome classifies how cmd ended with err, for the metrics.
func outcome(cmd domain.Command, err error) metrics.Outcome {
	var claimed *domain.ClaimedError
	var rule *domain.Error
	switch {
	case err == nil:
		switch cmd.(type) {
		case domain.ClaimHandoff:
			return metrics.Claimed
		case domain.WithdrawHandoff:
			return metrics.Withdrawn
		case domain.EraseSessionData:
			return metrics.Erased
		}
		return metrics.Created
	case errors.Is(err, ErrBusy):
		return metrics.Busy
	case errors.As(err, &claimed):
		return metrics.RaceLost
	case errors.As(err, &rule) && rule.Code != domain.EUNAVAILABLE && rule.Code != domain.EINTERNAL:
		return metrics.Rejected
	}
	return metrics.Failed
}

func (h *Handler) execute(ctx context.Context, actor domain.Actor, session uuid.UUID, cmd domain.Command, trace Trace, x execution) (Result, error) {
	stream := eventcodec.StreamName(actor.AccountID, session)
	for attempt := 1; ; attempt++ {
		state, snapshotAt, tip, err := h.state(ctx, actor.AccountID, session, cmd, attempt)
		if err != nil {
			return Result{}, err
		}
		decided, err := domain.Decide(state, cmd)
		if err != nil {
			return Result{}, err
		}
		events, err := h.encode(actor, decided, trace)
		if err != nil {
			return Result{}, err
		}
		events, change, err := h.seal(stream, tip.key, events)
		if err != nil {
			return Result{}, err
		}
		// The stream's data key as stored after this append.
		key := tip.key
		if change.Create != nil {
			key = change.Create
		}
		expected := eventstore.Exact(state.Version)
		var opts []eventstore.AppendOption
		if state.Version > 0 {
			// The stream was just read: its last event's hash chains the
			// new events in Go, and the store checks it is still the last.
			opts = append(opts, eventstore.AfterHash(tip.hash))
		}
		// The state after the command: a conflict reloads it anyway.
		for _, e := range decided {
			state.Apply(e)
		}
		var res Result
		if hd, ok := state.Handoff(decided[len(decided)-1].Handoff()); ok {
			res.Handoff = *hd
		}
		if x.answer != nil {
			answer, err := x.answer(res)
			if err != nil {
				return Result{}, err
			}
			// The stored answer repeats the notes: sealed under the
			// session's key, as the events hold them.
			if answer.Body, err = h.keys.SealAnswer(stream, key, answer.Body); err != nil {
				return Result{}, err
			}
			opts = append(opts, eventstore.WithAnswer(answer))
		}
		position, err := h.append(ctx, stream, expected, change, events, opts...)
		if errors.Is(err, eventstore.ErrConflict) {
			h.metrics.Conflict()
			if attempt < maxAttempts {
				h.metrics.Retry()
				continue
			}
			return Result{}, ErrBusy
		}
		if err != nil {
			return Result{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		h.metrics.Appended()
		if state.Version-snapshotAt >= SnapshotEvery {
			h.saveSnapshot(ctx, stream, state, events[len(events)-1].ID, key)
		}
		res.Position = position
		h.waitForReadModels(ctx, res.Position)
		return res, nil
	}
}

// append appends events and returns the position of the last one when the
// handler waits for the read models, which needs it; otherwise it returns 0.
func (h *Handler) append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, opts ...eventstore.AppendOption) (int64, error) {
	recorded, err := h.log.AppendKeyed(ctx, stream, expected, key, events, h.waiter != nil, opts...)
	if err != nil || h.waiter == nil {
		return 0, err
	}
	return recorded[len(recorded)-1].Position, nil
}

// seal seals the personal data of events under the stream's data key,
// stored as key (as loaded with the stream; nil for none), and returns
// them with the key change to append with them: a new key when the stream
// has none (its first events, or its first since an erasure). Without a
// keyring it returns events as they are.
func (h *Handler) seal(stream string, key *eventstore.DataKey, events []eventstore.NewEvent) ([]eventstore.NewEvent, eventstore.KeyChange, error) {
	if h.keys == nil {
		return events, eventstore.KeyChange{}, nil
	}
	var change eventstore.KeyChange
	var dk shred.DataKey
	var err error
	if key != nil {
		dk, err = h.keys.Unwrap(stream, key)
	} else {
		dk, change.Create, err = h.keys.NewDataKey(stream)
	}
	if err != nil {
		return nil, change, err
	}
	sealed, err := shred.Seal(dk, events)
	return sealed, change, err
}

// state returns the state to decide on and the version of the snapshot it
// was loaded from (0 for none). A handoff is most often the first of its
// session, so the first attempt at creating one decides on the empty state
// and appends expecting no stream, which saves reading the stream; if the
// stream exists, that append conflicts and the next attempt loads it.
// Every rule that rejects a creation on the empty state rejects it on any
// state, so the shortcut never gives a wrong answer.
//
// It also returns what it read of the stream's end (streamTip).
func (h *Handler) state(ctx context.Context, account, session uuid.UUID, cmd domain.Command, attempt int) (*domain.Session, int64, streamTip, error) {
	if _, creates := cmd.(domain.CreateHandoff); creates && attempt == 1 {
		return domain.NewSession(account, session), 0, streamTip{}, nil
	}
	return h.current(ctx, account, session)
}

// streamTip is what a load read of its stream's end: the stream's data key
// as read with its events (nil for none), and the hash of its last event
// (the zero hash for an empty stream), which chains the next append
// (eventstore.AfterHash). A load always reads the last event, from the
// snapshot's own event onwards or from the start, so a snapshot carries no
// hash.
type streamTip struct {
	key  *eventstore.DataKey
	hash eventstore.Hash
}

// tipOf returns the tip of recorded, a stream's events up to its last.
func tipOf(recorded []eventstore.Event) streamTip {
	if len(recorded) == 0 {
		return streamTip{}
	}
	return streamTip{key: recorded[0].DataKey, hash: recorded[len(recorded)-1].Hash}
}

// errUnusableSnapshot is matched by fromSnapshot's error for a snapshot
// that does not fit its stream.
var errUnusableSnapshot = errors.New("unusable snapshot")

// current returns the state of a session and the version of the snapshot
// it was loaded from: the stored snapshot and the events after it. With no
// snapshot it folds the whole stream, and returns 0. Snapshots are a
// cache: with one that is unusable (not made from this stream as it is, or
// not decodable) it logs a warning and folds the whole stream, so a bad
// snapshot costs time, never a wrong decision; the next snapshot saved
// replaces it.
func (h *Handler) current(ctx context.Context, account, session uuid.UUID) (*domain.Session, int64, streamTip, error) {
	stream := eventcodec.StreamName(account, session)
	snap, found, err := h.log.Snapshot(ctx, stream)
	if err != nil {
		return nil, 0, streamTip{}, fmt.Errorf("load %s: %w", stream, err)
	}
	if found {
		state, tip, err := h.fromSnapshot(ctx, account, session, snap)
		if err == nil {
			return state, snap.Version, tip, nil
		}
		if !errors.Is(err, errUnusableSnapshot) {
			return nil, 0, streamTip{}, err
		}
		slog.WarnContext(ctx, "snapshot not used: folding the whole stream", "stream", stream, "version", snap.Version, "err", err)
	}
	state, tip, err := h.load(ctx, account, session)
	return state, 0, tip, err
}

// fromSnapshot returns the state of snap with the events after it folded
// in. It reads the stream from snap's own version, to check that the event
// there is the one snap was made after.
func (h *Handler) fromSnapshot(ctx context.Context, account, session uuid.UUID, snap eventstore.Snapshot) (*domain.Session, streamTip, error) {
	recorded, err := h.log.ReadStreamAfter(ctx, snap.Stream, snap.Version-1)
	if err != nil {
		return nil, streamTip{}, fmt.Errorf("load %s after version %d: %w", snap.Stream, snap.Version-1, err)
	}
	if len(recorded) == 0 || recorded[0].Version != snap.Version || recorded[0].ID != snap.EventID {
		return nil, streamTip{}, fmt.Errorf("%w: the stream has no event %s at version %d", errUnusableSnapshot, snap.EventID, snap.Version)
	}
	state, err := eventcodec.DecodeSnapshot(snap.Data, account, session, snap.Version)
	if err != nil {
		return nil, streamTip{}, fmt.Errorf("%w: %w", errUnusableSnapshot, err)
	}
	h.openSnapshot(snap.Stream, recorded[0].DataKey, state)
	return state, tipOf(recorded), fold(state, snap.Stream, recorded[1:])
}

// sealSnapshot returns a copy of state whose open handoffs' notes are
// sealed under the stream's data key, stored as key (nil for none), as
// the read model keeps them (shred.Keyring.SealNotes): a snapshot holds
// the open handoff's notes, and a dump of the database must not show
// them.
func (h *Handler) sealSnapshot(stream string, key *eventstore.DataKey, state *domain.Session) (*domain.Session, error) {
	sealed := *state
	sealed.Handoffs = slices.Clone(state.Handoffs)
	for i, hd := range sealed.Handoffs {
		if hd.Status != domain.StatusOpen || hd.Notes == "" {
			continue
		}
		notes, err := h.keys.SealNotes(stream, key, hd.Notes)
		if err != nil {
			return nil, err
		}
		sealed.Handoffs[i].Notes = notes
	}
	return &sealed, nil
}

// openSnapshot opens, in place, the notes of a state decoded from a
// snapshot (sealSnapshot) with the stream's data key as read with it:
// erased when the key is gone.
func (h *Handler) openSnapshot(stream string, key *eventstore.DataKey, state *domain.Session) {
	for i, hd := range state.Handoffs {
		notes, erased := h.keys.OpenNotes(stream, key, hd.Notes)
		if erased {
			notes, state.Handoffs[i].NotesErased = "", true
		}
		state.Handoffs[i].Notes = notes
	}
}

// saveSnapshot stores state, which the event with id lastID brought to its
// version. A snapshot that cannot be saved is logged: the command has
// happened, and the next one saves it again.
func (h *Handler) saveSnapshot(ctx context.Context, stream string, state *domain.Session, lastID string, key *eventstore.DataKey) {
	sealed, err := h.sealSnapshot(stream, key, state)
	var data []byte
	if err == nil {
		data, err = eventcodec.EncodeSnapshot(sealed)
	}
	if err == nil {
		err = h.log.SaveSnapshot(ctx, eventstore.Snapshot{Stream: stream, Version: state.Version, EventID: lastID, Data: data})
	}
	if err != nil {
		slog.WarnContext(ctx, "snapshot not saved", "stream", stream, "version", state.Version, "err", err)
	}
}

// waitForReadModels waits until the read models show the log up to
// position. The events are recorded whatever happens here, so a read model
// that lags too long is logged rather than reported as the command failing.
func (h *Handler) waitForReadModels(ctx context.Context, position int64) {
	if h.waiter == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), waitTimeout)
	defer cancel()
	if err := h.waiter.WaitFor(ctx, position); err != nil {
		slog.ErrorContext(ctx, "read models lag behind an appended command", "position", position, "err", err)
	}
}

// SystemClock is the time now, in UTC and to the microsecond, the
// precision both stores keep.
func SystemClock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Now returns the handler's clock reading (WithClock; SystemClock by
// default).
func (h *Handler) Now() time.Time { return h.clock() }

// Load returns the state of a session of an account folded from its whole
// stream, without a snapshot: every handoff in it has its notes.
func (h *Handler) Load(ctx context.Context, account, session uuid.UUID) (*domain.Session, error) {
	state, _, err := h.load(ctx, account, session)
	return state, err
}

// load is Load, and returns what it read of the stream's end.
func (h *Handler) load(ctx context.Context, account, session uuid.UUID) (*domain.Session, streamTip, error) {
	stream := eventcodec.StreamName(account, session)
	recorded, err := h.log.ReadStreamAfter(ctx, stream, 0)
	if err != nil {
		return nil, streamTip{}, fmt.Errorf("load %s: %w", stream, err)
	}
	state := domain.NewSession(account, session)
	return state, tipOf(recorded), fold(state, stream, recorded)
}

// fold applies recorded events of stream to state.
func fold(state *domain.Session, stream string, recorded []eventstore.Event) error {
	for _, r := range recorded {
		e, err := eventcodec.Decode(r.Type, r.Data)
		if err != nil {
			return fmt.Errorf("load %s version %d: %w", stream, r.Version, err)
		}
		state.Apply(e)
	}
	return nil
}

func (h *Handler) encode(actor domain.Actor, decided []domain.Event, trace Trace) ([]eventstore.NewEvent, error) {
	meta := eventstore.Metadata{
		ActorID:             actor.UserID.String(),
		AccountID:           actor.AccountID.String(),
		TeamID:              actor.TeamID.String(),
		Role:                string(actor.Role),
		CorrelationID:       trace.RequestID,
		CausationID:         trace.RequestID,
		RequestID:           trace.RequestID,
		ClientRequestID:     trace.ClientRequestID,
		ClientCorrelationID: trace.ClientCorrelationID,
		ClientIP:            trace.ClientIP,
	}
	out := make([]eventstore.NewEvent, len(decided))
	for i, e := range decided {
		typ, data, err := eventcodec.Encode(e)
		if err != nil {
			return nil, err
		}
		// The handler names its events, so that it knows the id of the
		// last one when it saves a snapshot.
		out[i] = eventstore.NewEvent{ID: ulid.Make().String(), Type: typ, Data: data, Metadata: meta}
	}
	return out, nil
}
