// Package leader elects one runner for each background job (a projector, the
// relay) among the ledgerd processes that share a database. A job runs only
// while its process holds the job's named lock; when that process dies or
// loses its database connection, another process takes the lock over within
// about a second.
package leader

import (
	"context"
	"fmt"
	"sync"
)

// Locker hands out named leadership locks.
type Locker interface {
	// Acquire blocks until this process holds the named lock or ctx ends,
	// in which case it returns an error wrapping ctx.Err(). The returned
	// context, derived from ctx, is cancelled when leadership is lost (for
	// example because the database connection holding the lock died) or
	// when release is called. release gives the lock up; it may be called
	// more than once and must be called once leadership is no longer
	// wanted, even after held is done.
	Acquire(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// NewLocal returns a Locker whose locks exclude only other holders in this
// process, for the embedded single-process mode.
func NewLocal() Locker {
	return &local{held: make(map[string]chan struct{})}
}

type local struct {
	mu sync.Mutex
	// held maps each held lock's name to a channel closed when it is
	// released.
	held map[string]chan struct{}
}

func (l *local) Acquire(ctx context.Context, name string) (context.Context, func(), error) {
	for {
		l.mu.Lock()
		freed, busy := l.held[name]
		if !busy {
			freed = make(chan struct{})
			l.held[name] = freed
			l.mu.Unlock()
			return l.hold(ctx, name, freed)
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, acquireCancelled(ctx, name)
		case <-freed:
		}
	}
}

// hold returns the held context and release function of a lock just taken.
func (l *local) hold(ctx context.Context, name string, freed chan struct{}) (context.Context, func(), error) {
	held, cancel := context.WithCancel(ctx)
	unlock := sync.OnceFunc(func() {
		l.mu.Lock()
		delete(l.held, name)
		l.mu.Unlock()
		close(freed)
	})
	// A holder whose ctx ends loses the lock, as with PostgreSQL.
	context.AfterFunc(held, unlock)
	return held, func() { cancel(); unlock() }, nil
}

func acquireCancelled(ctx context.Context, name string) error {
	return fmt.Errorf("acquire lock %q: %w", name, ctx.Err())
}
