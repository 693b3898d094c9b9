package projections

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// Head tells where the committed end of the log is.
type Head interface {
	// Head returns the position of the last committed event: a reader
	// that has applied the log up to it has seen every event committed
	// before the call.
	Head(ctx context.Context) (int64, error)
}

// Waiter blocks until the read models reflect the log up to a position;
// *Projector is one.
type Waiter interface {
	WaitFor(ctx context.Context, position int64) error
}

// CaughtUp returns Queries that, before each read, wait until the read
// models reflect every event committed before the read began. A client that
// got a 2xx from a command therefore sees its change in its next read
// (read-your-writes), whichever process runs the projector, while commands
// answer as soon as their events are committed.
func CaughtUp(q Queries, log Head, w Waiter) Queries {
	return caughtUp{q: q, log: log, w: w}
}

type caughtUp struct {
	q   Queries
	log Head
	w   Waiter
}

func (c caughtUp) Queue(ctx context.Context, account, team uuid.UUID, page Page) ([]domain.Handoff, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.q.Queue(ctx, account, team, page)
}

func (c caughtUp) History(ctx context.Context, account, session uuid.UUID, page Page) ([]domain.Handoff, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.q.History(ctx, account, session, page)
}

func (c caughtUp) wait(ctx context.Context) error {
	head, err := c.log.Head(ctx)
	if err != nil {
		return fmt.Errorf("read models: find the log head: %w", err)
	}
	if err := c.w.WaitFor(ctx, head); err != nil {
		return fmt.Errorf("read models: wait for position %d: %w", head, err)
	}
	return nil
}
