// Package poll is for code that tails a log by polling: a Signal that
// wakes pollers when this process appends, and Sleep, the wait between
// polls that such a wake-up or the end of a context cuts short.
package poll

import (
	"context"
	"sync"
	"time"
)

// Signal wakes the readers of a log when events are appended in this
// process, so tailing code need not poll. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel that is closed at the next Notify.
func (s *Signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every current waiter.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Sleep waits for d, for wake (a channel from Wait; nil never fires) or for
// ctx to end; it reports whether ctx is still alive. Tailing code sleeps
// with it between polls, woken early by an append in this process.
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}
