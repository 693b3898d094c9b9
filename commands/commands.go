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
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// EventLog is what the handler needs from an event store.
type EventLog interface {
	Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) ([]eventstore.Event, error)
	AppendQuick(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) error
	ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error)
}

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
}

// Handler executes commands.
type Handler struct {
	log    EventLog
	waiter Waiter
}

// NewHandler returns a handler appending to log and waiting on waiter (nil
// for no waiting) before it reports success.
func NewHandler(log EventLog, waiter Waiter) *Handler {
	return &Handler{log: log, waiter: waiter}
}

// Result is a command's outcome: the handoff it touched, as it now stands,
// and, from a handler that waits for the read models, the position of the
// last event appended. A handler that does not wait has no use for the
// position and appends without reading it back (EventLog.AppendQuick);
// Position is then 0.
type Result struct {
	Handoff  domain.Handoff
	Position int64
}

// Execute runs cmd on the session of the actor's account. It returns a
// *domain.Error or *domain.ClaimedError for a rejected command.
func (h *Handler) Execute(ctx context.Context, actor domain.Actor, session uuid.UUID, cmd domain.Command, trace Trace) (Result, error) {
	stream := eventcodec.StreamName(actor.AccountID, session)
	for attempt := 1; ; attempt++ {
		state, err := h.state(ctx, actor.AccountID, session, cmd, attempt)
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
		position, err := h.append(ctx, stream, eventstore.Exact(state.Version), events)
		if errors.Is(err, eventstore.ErrConflict) {
			if attempt < maxAttempts {
				continue
			}
			return Result{}, ErrBusy
		}
		if err != nil {
			return Result{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		for _, e := range decided {
			state.Apply(e)
		}
		res := Result{Position: position}
		if hd, ok := state.Handoff(decided[len(decided)-1].Handoff()); ok {
			res.Handoff = *hd
		}
		h.waitForReadModels(ctx, res.Position)
		return res, nil
	}
}

// append appends events and returns the position of the last one when the
// handler waits for the read models, which needs it; otherwise it returns 0.
func (h *Handler) append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) (int64, error) {
	if h.waiter == nil {
		return 0, h.log.AppendQuick(ctx, stream, expected, events)
	}
	recorded, err := h.log.Append(ctx, stream, expected, events)
	if err != nil {
		return 0, err
	}
	return recorded[len(recorded)-1].Position, nil
}

// state returns the state to decide on. A handoff is most often the first
// of its session, so the first attempt at creating one decides on the empty
// state and appends expecting no stream, which saves reading the stream;
// if the stream exists, that append conflicts and the next attempt loads it.
// Every rule that rejects a creation on the empty state rejects it on any
// state, so the shortcut never gives a wrong answer.
func (h *Handler) state(ctx context.Context, account, session uuid.UUID, cmd domain.Command, attempt int) (*domain.Session, error) {
	if _, creates := cmd.(domain.CreateHandoff); creates && attempt == 1 {
		return domain.NewSession(account, session), nil
	}
	return h.Load(ctx, account, session)
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

// Now returns the handler's clock reading, in UTC and to the microsecond,
// the precision both stores keep.
func (h *Handler) Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Load returns the folded state of a session of an account.
func (h *Handler) Load(ctx context.Context, account, session uuid.UUID) (*domain.Session, error) {
	stream := eventcodec.StreamName(account, session)
	recorded, err := h.log.ReadStream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", stream, err)
	}
	state := domain.NewSession(account, session)
	for _, r := range recorded {
		e, err := eventcodec.Decode(r.Type, r.Data)
		if err != nil {
			return nil, fmt.Errorf("load %s version %d: %w", stream, r.Version, err)
		}
		state.Apply(e)
	}
	return state, nil
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
	}
	out := make([]eventstore.NewEvent, len(decided))
	for i, e := range decided {
		typ, data, err := eventcodec.Encode(e)
		if err != nil {
			return nil, err
		}
		out[i] = eventstore.NewEvent{Type: typ, Data: data, Metadata: meta}
	}
	return out, nil
}
