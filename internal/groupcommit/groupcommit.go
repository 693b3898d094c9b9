// Package groupcommit gathers writes that arrive while another is being
// written and hands them to one writer as a batch, so that a store can write
// them with one statement and one commit. There is no waiting for company: a
// write that arrives while no batch is being written is written at once, as
// a batch of one; the writes that arrive while it is written make up the
// next batch, which one of their callers writes as soon as the first batch
// is done.
package groupcommit

import (
	"context"
	"slices"
	"sync"
)

// Queue batches the items passed to Do. The zero value is not usable: set
// Write.
type Queue[T any] struct {
	// Write writes a batch and returns one error per item (nil for an item
	// written). It is called by one of the batch's callers, with that
	// caller's context; an item's own caller may have gone by then, so
	// Write decides how long the batch may take.
	Write func(ctx context.Context, items []T) []error
	// MaxItems bounds a batch; 0 means 256.
	MaxItems int
	// Writers is how many batches may be written at once; 0 means 1. More
	// than one lets a batch be written while another waits for its commit,
	// and keeps the writes from falling behind on a machine so busy that
	// one writer at a time gets too small a share of it.
	Writers int

	mu      sync.Mutex
	queue   []*waiter[T]
	writing int
}

type waiter[T any] struct {
	item T
	err  error
	// batch is set when this waiter is to write the next batch.
	batch []*waiter[T]
	wake  chan struct{}
}

// Do writes item, in a batch with whatever other items arrive meanwhile,
// and returns its error from Write. When ctx ends while item waits for its
// turn, Do returns ctx.Err() and item is not written; once its batch is
// being written, Do waits for the batch.
func (q *Queue[T]) Do(ctx context.Context, item T) error {
	w := &waiter[T]{item: item, wake: make(chan struct{}, 1)}
	q.mu.Lock()
	if q.writing < cmpOr(q.Writers, 1) {
		q.writing++
		q.queue = append(q.queue, w)
		batch := q.take()
		q.mu.Unlock()
		q.lead(ctx, batch)
		return w.err
	}
	q.queue = append(q.queue, w)
	q.mu.Unlock()
	select {
	case <-w.wake:
	case <-ctx.Done():
		q.mu.Lock()
		if i := slices.Index(q.queue, w); i >= 0 {
			q.queue = slices.Delete(q.queue, i, i+1)
			q.mu.Unlock()
			return ctx.Err()
		}
		q.mu.Unlock()
		// Taken into a batch: its writer bounds the wait (see Write).
		<-w.wake
	}
	if w.batch != nil {
		q.lead(ctx, w.batch)
	}
	return w.err
}

// take removes the next batch from the queue; q.mu is held.
func (q *Queue[T]) take() []*waiter[T] {
	n := min(len(q.queue), cmpOr(q.MaxItems, 256))
	batch := slices.Clone(q.queue[:n])
	q.queue = slices.Delete(q.queue, 0, n)
	return batch
}

// lead writes batch, hands the next batch, if any, to one of its callers,
// and wakes the callers of batch but the first, which is the leader's own.
func (q *Queue[T]) lead(ctx context.Context, batch []*waiter[T]) {
	items := make([]T, len(batch))
	for i, w := range batch {
		items[i] = w.item
	}
	errs := q.Write(ctx, items)
	for i, w := range batch {
		w.err = errs[i]
	}
	q.mu.Lock()
	var next *waiter[T]
	if len(q.queue) > 0 {
		next = q.queue[0]
		next.batch = q.take()
	} else {
		q.writing--
	}
	q.mu.Unlock()
	if next != nil {
		next.wake <- struct{}{}
	}
	// batch[0] is the leader: the caller that took the batch.
	for _, w := range batch[1:] {
		w.wake <- struct{}{}
	}
}

func cmpOr(v, fallback int) int {
	if v > 0 {
		return v
	}
	return fallback
}
