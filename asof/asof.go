// Package asof answers reads as the ledger stood at an instant: it folds
// the events recorded up to that instant with the domain's own
// Session.Apply, as the projector does, so an answer about the past cannot
// drift from the rules that made the present. The REST API's as_of
// parameter and `ledgerd replay` use it.
//
// "Recorded up to T" means: the events whose recorded_at is at or before
// T, each stream's taken in version order up to its first event recorded
// after T. Within a stream, recorded times follow versions (an append
// reads the stream's version before it writes the next one); stopping at
// the first later event keeps each fold a prefix of its stream, a state
// the session really had, even if two appends racing within microseconds
// ever recorded times out of order. See docs/audit-past.md.
package asof

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/projections"
)

// Log is what reads of the past need from the event store.
type Log interface {
	// ReadStream returns a stream's events in version order.
	ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error)
	// ReadAccount returns up to limit events of an account with a position
	// greater than after, in position order.
	ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error)
}

// accountBatch is how many events Queue reads at a time.
const accountBatch = 1000

// Until returns the first events of a stream, given in version order, up
// to the first one recorded after t.
func Until(events []eventstore.Event, t time.Time) []eventstore.Event {
	if i := slices.IndexFunc(events, func(e eventstore.Event) bool { return e.RecordedAt.After(t) }); i >= 0 {
		return events[:i]
	}
	return events
}

// Fold folds events, a prefix of the stream of a session of an account in
// version order, into the session's state. An event that does not decode
// (written by a faulty or foreign writer, or of a type this version does
// not know) changes nothing but the state's version: the projector skips
// it too, so the past is told as the read models told it. each, when not
// nil, is called with every event, the state right after it, and for an
// event passed over the error that made it so; its error stops the fold.
func Fold(account, session uuid.UUID, events []eventstore.Event, each func(e eventstore.Event, state *domain.Session, skipped error) error) (*domain.Session, error) {
	state := domain.NewSession(account, session)
	for _, e := range events {
		skipped := apply(state, e)
		if each == nil {
			continue
		}
		if err := each(e, state, skipped); err != nil {
			return nil, err
		}
	}
	return state, nil
}

// apply folds e into state, or only counts it when it does not decode,
// and returns the decoding error.
func apply(state *domain.Session, e eventstore.Event) error {
	decoded, err := eventcodec.Decode(e.Type, e.Data)
	if err != nil {
		state.Version++
		return fmt.Errorf("event %d (version %d of %s) passed over: %w", e.Position, e.Version, e.Stream, err)
	}
	state.Apply(decoded)
	return nil
}

// Session returns the state of a session of an account as of t. Its cost
// follows the session's events, whatever the size of the log.
func Session(ctx context.Context, log Log, account, session uuid.UUID, t time.Time) (*domain.Session, error) {
	stream := eventcodec.StreamName(account, session)
	events, err := log.ReadStream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read %s as of %s: %w", stream, t.Format(time.RFC3339Nano), err)
	}
	return Fold(account, session, Until(events, t), nil)
}

// History returns a page of the handoffs of a session of an account as
// they stood at t, in the order and with the paging of
// projections.Queries.History: newest first; none for a session of
// another account or none at all.
func History(ctx context.Context, log Log, account, session uuid.UUID, t time.Time, page projections.Page) ([]domain.Handoff, error) {
	state, err := Session(ctx, log, account, session, t)
	if err != nil {
		return nil, err
	}
	return pageOf(NewestFirst(state), page, projections.HistoryCursor, descending), nil
}

// Queue returns a page of the handoffs of an account that were open at t,
// in the order and with the paging of projections.Queries.Queue: those of
// one team, or of every team of the account when team is uuid.Nil (the
// auditor's queue). It reads the account's events, never another's, and
// keeps one folded session per session of the account.
func Queue(ctx context.Context, log Log, account, team uuid.UUID, t time.Time, page projections.Page) ([]domain.Handoff, error) {
	sessions := map[string]*domain.Session{}
	// ended holds the streams that have reached an event recorded after t.
	ended := map[string]bool{}
	for after := int64(0); ; {
		events, err := log.ReadAccount(ctx, account, after, accountBatch)
		if err != nil {
			return nil, fmt.Errorf("read the events of account %s after %d: %w", account, after, err)
		}
		if len(events) == 0 {
			break
		}
		after = events[len(events)-1].Position
		for _, e := range events {
			if ended[e.Stream] || e.RecordedAt.After(t) {
				ended[e.Stream] = true
				continue
			}
			state, ok := sessions[e.Stream]
			if !ok {
				_, session, err := eventcodec.ParseStreamName(e.Stream)
				if err != nil {
					continue // not a session's stream: no handoff lives there
				}
				state = domain.NewSession(account, session)
				sessions[e.Stream] = state
			}
			_ = apply(state, e) // passed over, as the projector does
		}
	}
	var open []domain.Handoff
	for _, state := range sessions {
		if h, ok := state.Open(); ok && (team == uuid.Nil || h.TeamID == team) {
			open = append(open, *h)
		}
	}
	return pageOf(sorted(open, projections.QueueCursor, ascending), page, projections.QueueCursor, ascending), nil
}

// NewestFirst returns a session's handoffs in the order of its history:
// newest first, then by id descending (projections.HistoryCursor).
func NewestFirst(state *domain.Session) []domain.Handoff {
	return sorted(state.Handoffs, projections.HistoryCursor, descending)
}

// Directions of a list's order of cursors (projections.Cursor.Compare).
const (
	ascending  = 1
	descending = -1
)

// sorted returns a copy of hs sorted by their places in a list (place,
// in direction).
func sorted(hs []domain.Handoff, place func(domain.Handoff) projections.Cursor, direction int) []domain.Handoff {
	return slices.SortedFunc(slices.Values(hs), func(a, b domain.Handoff) int { return direction * place(a).Compare(place(b)) })
}

// pageOf returns the page of hs, sorted by their places in a list (place,
// in direction), that a read-model store would: the first page.Limit of
// those after page.After.
func pageOf(hs []domain.Handoff, page projections.Page, place func(domain.Handoff) projections.Cursor, direction int) []domain.Handoff {
	if page.After != nil {
		first := slices.IndexFunc(hs, func(h domain.Handoff) bool { return direction*place(h).Compare(*page.After) > 0 })
		if first < 0 {
			first = len(hs)
		}
		hs = hs[first:]
	}
	return hs[:min(len(hs), page.Limit)]
}
