package projections

import (
	"context"
	"log/slog"
)

// Replay rebuilds the read models event by event inside the rebuild's
// transaction, the way the rebuild falls back to when the store refuses a
// row written in bulk.
func Replay(ctx context.Context, log Log, store Store) error {
	return replay(ctx, log, store, slog.Default())
}
