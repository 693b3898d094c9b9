package projections

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Stall is what a StallWatch saw of a checkpoint that stands still behind
// the head of the log.
type Stall struct {
	// Checkpoint is where it stands, Head where the log's end is.
	Checkpoint, Head int64
	// For is how long it has not moved.
	For time.Duration
}

// StallWatch tells whether a named checkpoint (a projector's, the relay's)
// has stalled: it has not moved for a while although the log's head is
// beyond it. It reads both from the database, so every process sharing the
// database sees a stall, whichever process runs the worker that moves the
// checkpoint, and remembers in this process since when it has seen the
// checkpoint behind the head without moving. A checkpoint at the head has
// nothing to do and never stalls, however long the log stays idle.
//
// A watch only learns what it looks at: a stall is reported by the first
// Check at least `after` past the first Check that saw the checkpoint
// behind the head where it still stands. Safe for concurrent use.
type StallWatch struct {
	name  string
	store interface {
		Checkpoint(ctx context.Context, name string) (int64, error)
	}
	log   Head
	after time.Duration

	mu       sync.Mutex
	seen     bool
	position int64     // the checkpoint as last seen
	behind   bool      // whether it was behind the head then
	since    time.Time // when it was first seen behind without moving since
}

// NewStallWatch returns a watch of the checkpoint name in store, against
// the head of log, that reports a stall once the checkpoint has stood
// still behind the head for after (which must be positive).
func NewStallWatch(store interface {
	Checkpoint(ctx context.Context, name string) (int64, error)
}, log Head, name string, after time.Duration) *StallWatch {
	return &StallWatch{name: name, store: store, log: log, after: after}
}

// Name returns the name of the watched checkpoint.
func (w *StallWatch) Name() string { return w.name }

// Check reads the checkpoint and the head of the log, and reports whether
// the checkpoint has stalled.
func (w *StallWatch) Check(ctx context.Context) (Stall, bool, error) {
	// The checkpoint is read first: read after the head, a checkpoint that
	// moved in between could pass a head read before it.
	cp, err := w.store.Checkpoint(ctx, w.name)
	if err != nil {
		return Stall{}, false, fmt.Errorf("stall watch %s: %w", w.name, err)
	}
	head, err := w.log.Head(ctx)
	if err != nil {
		return Stall{}, false, fmt.Errorf("stall watch %s: %w", w.name, err)
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.seen && cp < w.position:
		// Read before a concurrent Check saw the checkpoint further on.
		return Stall{}, false, nil
	case !w.seen || cp > w.position || cp >= head || !w.behind:
		w.seen, w.position, w.behind, w.since = true, cp, cp < head, now
		return Stall{}, false, nil
	}
	still := now.Sub(w.since)
	if still < w.after {
		return Stall{}, false, nil
	}
	return Stall{Checkpoint: cp, Head: head, For: still}, true, nil
}
