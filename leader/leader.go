// Package leader elects one runner for each background job (a projector, the
// relay) among the ledgerd processes that share a database.
//
// A job runs only while its process holds the job's named lease. On
// PostgreSQL a lease is a row of the leader_leases table that its holder
// renews every second or so and that expires a few seconds after the last
// renewal, at the server's clock; each new tenure increments the lease's
// token. A holder whose renewals stop succeeding stops acting (its
// held context is cancelled) before the lease expires, and so before
// another process can take it. A holder that cannot stop itself (a frozen
// process, a partitioned host) is made harmless by fencing: each of a
// job's writes that only the leader may make carries the lease's Fence,
// which the store checks in the write's own transaction, refusing it with
// ErrDeposed once the lease has expired or passed to another holder.
package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrDeposed is matched (errors.Is) by the error of a write whose Fence is
// no longer valid: its lease expired or passed to another holder. The job
// that gets it has lost leadership and must stop, not retry.
var ErrDeposed = errors.New("leadership lost: the lease expired or passed to another holder")

// Locker hands out named leases.
type Locker interface {
	// Acquire blocks until this process holds the named lease or ctx ends,
	// in which case it returns an error wrapping ctx.Err(). The lease's
	// Context, derived from ctx, is cancelled when leadership is lost or
	// released. Release must be called once leadership is no longer
	// wanted, even after the Context is done.
	Acquire(ctx context.Context, name string) (*Lease, error)
}

// Lease is leadership of one job, from Acquire until Release.
type Lease struct {
	ctx     context.Context
	fence   Fence
	release func()
}

// Context is done when leadership is lost or released: the job must stop
// acting for the leader then.
func (l *Lease) Context() context.Context { return l.ctx }

// Fence identifies this tenure of the lease, for the writes only the
// leader may make.
func (l *Lease) Fence() Fence { return l.fence }

// Release gives the lease up at once, so another process may take it
// without waiting for it to expire. It may be called more than once.
func (l *Lease) Release() { l.release() }

// Fence identifies one tenure of a lease: its name and the token it had
// while one holder held it. A store checks it in the transaction of each
// write only the leader may make, and refuses the write with ErrDeposed
// when the lease no longer has this token or has expired.
//
// A Fence with token 0 is not checked: the local locker's leases carry it
// (its one process needs no fence), and so do writers that are no leader
// and rely on a compare-and-set alone (a rebuild of the read models).
type Fence struct {
	Name  string
	Token int64
}

// Checked reports whether stores must check the fence.
func (f Fence) Checked() bool { return f.Token != 0 }

// NewLease returns a lease held until ctx is done, with fence; release
// gives it up and must be safe to call more than once. Lockers make
// their leases with it.
func NewLease(ctx context.Context, fence Fence, release func()) *Lease {
	return &Lease{ctx: ctx, fence: fence, release: release}
}

// NewLocal returns a Locker whose leases exclude only other holders in this
// process, for the embedded single-process mode. Its leases last until
// released and carry an unchecked Fence.
func NewLocal() *Local {
	return &Local{held: make(map[string]chan struct{})}
}

// Local is the Locker of one process; see NewLocal.
type Local struct {
	mu sync.Mutex
	// held maps each held lease's name to a channel closed when it is
	// released.
	held map[string]chan struct{}
}

// Acquire waits until no other holder in this process has the lease.
func (l *Local) Acquire(ctx context.Context, name string) (*Lease, error) {
	for {
		l.mu.Lock()
		freed, busy := l.held[name]
		if !busy {
			freed = make(chan struct{})
			l.held[name] = freed
			l.mu.Unlock()
			return l.hold(ctx, name, freed), nil
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("acquire lease %q: %w", name, ctx.Err())
		case <-freed:
		}
	}
}

// hold returns the lease just taken.
func (l *Local) hold(ctx context.Context, name string, freed chan struct{}) *Lease {
	held, cancel := context.WithCancel(ctx)
	unlock := sync.OnceFunc(func() {
		l.mu.Lock()
		delete(l.held, name)
		l.mu.Unlock()
		close(freed)
	})
	// A holder whose ctx ends loses the lease, as with PostgreSQL.
	context.AfterFunc(held, unlock)
	return &Lease{ctx: held, fence: Fence{Name: name}, release: func() { cancel(); unlock() }}
}
